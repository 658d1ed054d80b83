"""The importance profile: the cached, versioned result of stage 1 for one base model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file

from shared.atomic import atomic_directory
from shared.cache import cache_dir
from shared.harmonizer import HarmonizerConfig

PROFILE_VERSION = 2  # 2: regression-initialised harmonizers, deployed nested masks, per-token KD
PROFILE_JSON = "profile.json"
HARMONIZERS_FILE = "harmonizers.safetensors"
CALIBRATION_CORPUS = "gensim-enwiki-excerpt+lee-background/v1"


class Stage1Config(BaseModel):
    """Dynamic LayerReplace hyper-parameters (defaults measured on SmolLM2-135M, 2 CPU cores;
    docs/method-notes.md says why each one is what it is)."""

    adapter_bottom: int = Field(2, ge=0)
    adapter_top: int = Field(2, ge=0)
    harmonizer_rank: int = Field(64, ge=1, description="r_h: harmonizer bottleneck width")
    served_alphas: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75], min_length=1,
        description="alphas whose deployed masks (the k least important blocks) the harmonizers are trained on")
    fit_sequences: int = Field(96, ge=0, description="calibration sequences of seq_len tokens for the per-block "
                               "regression that initialises the harmonizers (0: start from the identity)")
    fit_steps: int = Field(300, ge=0, description="Adam steps of each harmonizer's regression")
    fit_lr: float = Field(3e-3, gt=0, description="learning rate of the per-block regression")
    init_ranking: Literal["influence", "fit_error"] = Field(
        "influence", description="what the importance logits start from: block influence (1 - cos of a block's input "
        "and output) or the held-out error of its regression-fitted harmonizer")
    init_scale: float = Field(1.0, ge=0, description="importance logits start at init_scale * the z-scored log "
                              "of the init_ranking measure")
    steps: int = Field(150, ge=0, description="T: alternating DL + RL steps after the initialisation")
    batch_size: int = Field(4, ge=1)
    seq_len: int = Field(128, ge=8)
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the harmonizers")
    weight_decay: float = Field(0.0, ge=0)
    kd_weight: float = Field(1.0, ge=0, description="lambda: weight of the per-token normalised hidden-state "
                             "MSE at the middle output (ordinary tokens; the attention sink left out)")
    jac_weight: float = Field(0.0, ge=0, description="weight of the Jacobian term: the mixed middle must respond "
                              "to a small perturbation of its input as the original does (bottom-adapter gradients)")
    logit_kd_weight: float = Field(0.0, ge=0, description="weight of KL(full || mixed) of the next-token "
                                   "distributions: the emulator's predictions follow the full model's, not only "
                                   "its hidden states (0: off)")
    jac_eps: float = Field(0.05, gt=0, description="perturbation size relative to each token's hidden-state norm")
    score_lr: float = Field(0.05, ge=0, description="Adam learning rate of the importance logits (0: no RL)")
    rl_samples: int = Field(3, ge=2, description="C: masks sampled per RL step")
    seed: int = 0
    checkpoint_every: int = Field(20, ge=1, description="steps between resumable checkpoints")

    def harmonizer_config(self, activation: str) -> HarmonizerConfig:
        return HarmonizerConfig(rank=self.harmonizer_rank, activation=activation)


ADAPTER_FIELDS = ("adapter_bottom", "adapter_top")  # from the emulator request, never from overrides


def parse_stage1_overrides(overrides: Mapping[str, Any] | str) -> dict[str, Any]:
    """Stage-1 overrides (the service's SCALEOT_STAGE1, the CLI's --stage1): a JSON object of Stage1Config
    fields other than the adapter split, e.g. {"steps": 40, "batch_size": 2}; each value is validated."""
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"stage-1 overrides must be a JSON object such as '{{\"steps\": 40}}': {exc}") from None
    if not isinstance(overrides, Mapping):
        raise ValueError(f"stage-1 overrides must be a JSON object such as '{{\"steps\": 40}}', "
                         f"not {type(overrides).__name__}")
    settable = [name for name in Stage1Config.model_fields if name not in ADAPTER_FIELDS]
    adapter = sorted(set(overrides) & set(ADAPTER_FIELDS))
    if adapter:
        raise ValueError(f"stage-1 overrides cannot set {', '.join(adapter)}: the adapter split comes from the "
                         "emulator (--adapter-bottom/--adapter-top, or the request)")
    unknown = sorted(set(overrides) - set(settable))
    if unknown:
        raise ValueError(f"unknown stage-1 setting(s) {', '.join(unknown)}; known: {', '.join(settable)}")
    Stage1Config.model_validate(dict(overrides))  # each value's own error, naming the field
    return dict(overrides)


def stage1_config(overrides: Mapping[str, Any] | str, adapter_bottom: int, adapter_top: int) -> Stage1Config:
    """The one way a stage-1 config is made from an adapter split and overrides."""
    values = parse_stage1_overrides(overrides)
    return Stage1Config.model_validate({**values, "adapter_bottom": adapter_bottom, "adapter_top": adapter_top})


class CurvePoint(BaseModel):
    step: int
    loss: float  # DL loss: CE + lambda * nMSE
    ce: float
    nmse: float
    reward: float  # mean RL reward (-loss) over the C masks
    replaced: int = 0  # blocks replaced by the DL step's (deployed) mask
    jac: float = 0.0  # Jacobian-matching error of the DL step (0 when the term is off)


class Stage1Init(BaseModel):
    """What the training-free initialisation measured on cached calibration activations."""

    influence: list[float]  # 1 - cos(input, output) per middle block, ordinary tokens
    fit_error: list[float]  # held-out per-token error of each regression-fitted harmonizer
    importance: list[float]  # the logits stage 1 started from


class ProfileMeta(BaseModel):
    version: int = PROFILE_VERSION
    profile_id: str
    base_model: str
    base_model_sha256: str
    config: Stage1Config
    harmonizer: HarmonizerConfig
    corpus: str = CALIBRATION_CORPUS
    middle: list[int]
    importance: list[float]
    init: Stage1Init | None = None
    curve: list[CurvePoint]
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0


class ImportanceProfile:
    def __init__(self, meta: ProfileMeta, harmonizers: dict[str, torch.Tensor]) -> None:
        self.meta = meta
        self.harmonizers = harmonizers  # "{full_index}.{param}" -> tensor

    def importance_of(self) -> dict[int, float]:
        return dict(zip(self.meta.middle, self.meta.importance, strict=True))

    def harmonizer_state(self, full_index: int) -> dict[str, torch.Tensor]:
        prefix = f"{full_index}."
        state = {k[len(prefix) :]: v for k, v in self.harmonizers.items() if k.startswith(prefix)}
        if not state:
            raise KeyError(f"profile {self.meta.profile_id} has no harmonizer for block {full_index}")
        return state


def corpus_tag(texts: list[str] | None) -> str:
    """Names the stage-1 training text: the built-in calibration corpus, or a digest of custom text."""
    if texts is None:
        return CALIBRATION_CORPUS
    return "custom-" + hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def profile_id(base_sha256: str, config: Stage1Config, corpus: str = CALIBRATION_CORPUS,
               dtype: str = "float32") -> str:
    """Stable id of a stage-1 run; `dtype` is the frozen base's (float32 leaves the ids of earlier profiles)."""
    # a field added later is hashed only when set: off leaves the ids of earlier profiles
    later = {"logit_kd_weight"} if not config.logit_kd_weight else set()
    payload: dict[str, object] = {
        "version": PROFILE_VERSION,
        "base": base_sha256,
        "corpus": corpus,
        "config": config.model_dump(mode="json", exclude={"checkpoint_every", *later}),
    }
    if dtype != "float32":
        payload["dtype"] = dtype
    return "prof-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def profiles_root() -> Path:
    return cache_dir() / "profiles"


def profile_dir(pid: str) -> Path:
    return profiles_root() / pid


def checkpoint_dir(pid: str) -> Path:
    """Where stage 1 keeps its resumable checkpoint for profile `pid` (beside the profile)."""
    return profiles_root() / f".{pid}.partial"


def save_profile(profile: ImportanceProfile, directory: Path | None = None) -> Path:
    """Write atomically: a crash mid-write never leaves a half profile behind."""
    target = directory or profile_dir(profile.meta.profile_id)
    with atomic_directory(target) as tmp:
        save_file({k: v.contiguous() for k, v in profile.harmonizers.items()}, tmp / HARMONIZERS_FILE)
        (tmp / PROFILE_JSON).write_text(profile.meta.model_dump_json(indent=2))
    return target


def load_profile(directory: Path) -> ImportanceProfile:
    raw = json.loads((directory / PROFILE_JSON).read_text())
    version = raw.get("version") if isinstance(raw, dict) else None
    if version != PROFILE_VERSION:  # checked before parsing: an old format is rebuilt, never misread
        raise ValueError(f"profile {directory} has version {version}, expected {PROFILE_VERSION}")
    meta = ProfileMeta.model_validate(raw)
    return ImportanceProfile(meta, load_file(directory / HARMONIZERS_FILE))


def find_profile(pid: str) -> ImportanceProfile | None:
    directory = profile_dir(pid)
    if (directory / PROFILE_JSON).is_file() and (directory / HARMONIZERS_FILE).is_file():
        return load_profile(directory)
    return None
