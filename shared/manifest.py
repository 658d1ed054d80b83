"""The emulator manifest: what an emulator is made of, and the hash of every file it ships."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, StrictBool

from shared.harmonizer import HarmonizerConfig
from shared.precision import DtypeName

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "emulator.safetensors"
FORMAT_VERSION = 1


class LayerKind(StrEnum):
    adapter = "adapter"  # original block, tuned by the data owner
    kept = "kept"  # original middle block, frozen
    kept_src = "kept+src"  # original middle block with rank-compressed attention projections
    harmonizer = "harmonizer"  # lightweight stand-in for a replaced middle block


class LayerEntry(BaseModel):
    emulator_index: int
    full_index: int
    kind: LayerKind
    src_ranks: dict[str, int] = Field(
        default_factory=dict, description="kept+src only: projection name (within the block) -> kept rank"
    )


class FileEntry(BaseModel):
    sha256: str
    size: int


class EmulatorOptions(BaseModel):
    """Ablation switches of `scaleot` (ignored by `uniform`), and `distill` of `uniform` (ignored by `scaleot`).
    Strict booleans: a request's 0, 1 or "false" is refused naming the switch, not taken as one."""

    harmonizers: StrictBool = True  # off: importance-based LayerDrop
    importance: StrictBool = True  # off: uniform positions, with harmonizers
    src: StrictBool = True  # off: beta is ignored
    # off: SRC is applied after stage 1 with no re-fit (the old behaviour); only used when beta > 0 with harmonizers
    refit: StrictBool = True
    # uniform only: Offsite-Tuning's distilled emulator (OT-KD), the kept middle blocks trained toward the full model
    distill: StrictBool = False


class RefitRecord(BaseModel):
    """How the harmonizers were re-fitted after SRC (stage 2, beta > 0), and what it bought."""

    sequences: int
    check_sequences: int
    seq_len: int
    steps: int
    lr: float
    seed: int
    corpus: str
    # full-model index -> per-token error against the full model on the held-out check sequences,
    # of the stage-1 harmonizer (before) and of the one shipped (after; a re-fit that did not help is discarded)
    error_before: dict[int, float]
    error_after: dict[int, float]
    seconds: float = 0.0


class CalibrationRecord(BaseModel):
    """How the harmonizers were refined on a data owner's unlabelled prompts (task calibration), and what it bought."""

    prompts_sha256: str  # of the whole prompt set (the prompts themselves stay with the model owner)
    n_prompts: int  # prompts the harmonizers were refined on
    n_check: int  # held out: the refinement is kept only if it lowers their KL
    steps: int
    batch_size: int
    max_len: int
    lr: float
    answer_weight: float
    check_share: float
    seed: int
    check_kl_before: float  # KL(full || emulator) per token + answer_weight x on the choice tokens, held out
    check_kl_after: float
    kept: bool
    curve: list[float] = Field(default_factory=list)
    seconds: float


class DistillRecord(BaseModel):
    """How the kept middle blocks of a uniform emulator were distilled toward the full model (OT-KD)."""

    steps: int
    batch_size: int
    seq_len: int
    lr: float
    seed: int
    corpus: str
    # per-token error of the hidden state entering the top adapter against the full model's, on held-out
    # check sequences: uniform LayerDrop (before) and what is shipped (after; a worse distillation is discarded)
    error_before: float
    error_after: float
    seconds: float = 0.0


class EmulatorManifest(BaseModel):
    format: Literal["scaleot-emulator"] = "scaleot-emulator"
    format_version: int = FORMAT_VERSION
    emulator_id: str
    base_model: str
    base_model_sha256: str
    method: Literal["scaleot", "uniform"]
    adapter_bottom: int
    adapter_top: int
    alpha: float
    beta: float
    options: EmulatorOptions = Field(default_factory=EmulatorOptions)
    seed: int
    num_full_layers: int
    layers: list[LayerEntry]
    harmonizer: HarmonizerConfig | None = None
    refit: RefitRecord | None = Field(None, description="set when the harmonizers were re-fitted after SRC")
    distill: DistillRecord | None = Field(None, description="set when the kept middle blocks were distilled (OT-KD)")
    calibration: CalibrationRecord | None = Field(
        None, description="set when the harmonizers were refined on a data owner's unlabelled prompts")
    profile_id: str | None = None
    dtype: DtypeName = Field(
        "float32", description="dtype of the weights in emulator.safetensors (the base model's)")
    library_versions: dict[str, str] = Field(default_factory=dict)
    created_at: str = ""
    files: dict[str, FileEntry] = Field(default_factory=dict)

    def adapter_indices(self) -> list[int]:
        """Full-model indices of the adapter blocks (what the data owner tunes and uploads)."""
        return [e.full_index for e in self.layers if e.kind == LayerKind.adapter]

    def emulator_to_full(self) -> dict[int, int]:
        return {e.emulator_index: e.full_index for e in self.layers}
