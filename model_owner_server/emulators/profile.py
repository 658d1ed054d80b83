"""The importance profile: the cached, versioned result of stage 1 for one base model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file

from shared.atomic import atomic_directory
from shared.cache import cache_dir
from shared.harmonizer import HarmonizerConfig

PROFILE_VERSION = 1
PROFILE_JSON = "profile.json"
HARMONIZERS_FILE = "harmonizers.safetensors"
CALIBRATION_CORPUS = "gensim-enwiki-excerpt+lee-background/v1"


class Stage1Config(BaseModel):
    """Dynamic LayerReplace hyper-parameters (defaults measured on SmolLM2-135M, 2 CPU cores)."""

    adapter_bottom: int = Field(2, ge=0)
    adapter_top: int = Field(2, ge=0)
    group_size: int = Field(4, ge=1, description="g: consecutive middle blocks per sampling group")
    harmonizer_rank: int = Field(64, ge=1, description="r_h: harmonizer bottleneck width")
    steps: int = Field(200, ge=1, description="T: alternating DL + RL steps")
    batch_size: int = Field(4, ge=1)
    seq_len: int = Field(128, ge=8)
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the harmonizers")
    weight_decay: float = Field(0.0, ge=0)
    kd_weight: float = Field(1.0, ge=0, description="lambda: weight of the normalised hidden-state MSE")
    score_lr: float = Field(0.05, gt=0, description="Adam learning rate of the importance logits")
    rl_samples: int = Field(3, ge=2, description="C: masks sampled per RL step")
    seed: int = 0
    checkpoint_every: int = Field(20, ge=1, description="steps between resumable checkpoints")

    def harmonizer_config(self, activation: str) -> HarmonizerConfig:
        return HarmonizerConfig(rank=self.harmonizer_rank, activation=activation)


class CurvePoint(BaseModel):
    step: int
    loss: float  # DL loss: CE + lambda * nMSE
    ce: float
    nmse: float
    reward: float  # mean RL reward (-loss) over the C masks


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


def profile_id(base_sha256: str, config: Stage1Config, corpus: str = CALIBRATION_CORPUS) -> str:
    payload = {
        "version": PROFILE_VERSION,
        "base": base_sha256,
        "corpus": corpus,
        "config": config.model_dump(mode="json", exclude={"checkpoint_every"}),
    }
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
    meta = ProfileMeta.model_validate_json((directory / PROFILE_JSON).read_text())
    if meta.version != PROFILE_VERSION:
        raise ValueError(f"profile {directory} has version {meta.version}, expected {PROFILE_VERSION}")
    return ImportanceProfile(meta, load_file(directory / HARMONIZERS_FILE))


def find_profile(pid: str) -> ImportanceProfile | None:
    directory = profile_dir(pid)
    if (directory / PROFILE_JSON).is_file() and (directory / HARMONIZERS_FILE).is_file():
        return load_profile(directory)
    return None
