"""The REST contract both parties speak: the request and response bodies of the service (with their
OpenAPI examples). The server validates and serves these; the data owner's client parses its answers
with the same models instead of reading untyped JSON."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from shared.job_outcomes import EvaluationMatrix, JobState
from shared.manifest import EmulatorManifest, EmulatorOptions, FileEntry

MAX_EVAL_LIMIT = 100_000  # test examples of one evaluation
MAX_NEW_TOKENS = 4096  # the schema's bound; SCALEOT_GENERATE_MAX_NEW_TOKENS caps it further
MIN_SAMPLING_TEMPERATURE = 0.01  # below this, logits / temperature overflow; 0 means greedy
MAX_SEED = 2**32 - 1
MAX_ADAPTER_BLOCKS = 1024  # adapter_bottom, adapter_top


class ErrorOut(BaseModel):
    """Every 4xx answer."""

    detail: str | list[dict[str, Any]] | dict[str, Any] = Field(
        description="why: a sentence, the list of validation errors, or {message, problems} for an upload")


class Health(BaseModel):
    status: str = "ok"
    database: str
    schema_revision: str | None


class ModelInfo(BaseModel):
    name: str
    kind: str
    prepared: bool
    description: str


class GapEstimate(BaseModel):
    mean: float = Field(description="points, mean over the frontier's tasks")
    ci95: tuple[float, float] = Field(description="paired 95% bootstrap interval over test items and seeds")


class DialRecommendation(BaseModel):
    """The (alpha, beta) the model owner recommends requesting for a wanted privacy gap, read off the
    privacy-utility frontier it measured (`scaleot-server bench frontier`)."""

    model: str
    wanted_privacy_gap: float
    conservative: bool = Field(description="true: the CI's lower end, not the mean, reaches the wanted gap")
    method: str = "scaleot"
    alpha: float
    beta: float
    adapter_bottom: int = Field(description="the adapter split the frontier was measured with: request the same")
    adapter_top: int
    privacy_gap: GapEstimate = Field(description="plug-in minus emulator fine-tuned accuracy, points")
    utility_gap: GapEstimate = Field(description="adapter-only tuning on the full model minus plug-in, points")
    plug_in: float | None = Field(None, description="plug-in accuracy at this point, %")
    tasks: list[str] = Field(default_factory=list, description="tasks the frontier was measured on")
    learning_rates: dict[str, float] = Field(default_factory=dict, description="per task of the frontier, the "
                                             "adapter learning rate the owner chose on its validation split: a "
                                             "starting point for tuning on this emulator")
    caveat: str = Field("", description="how the point was chosen: read off the same test items and seeds its gaps "
                        "come from (in-sample) where that is so")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": "smollm2-135m", "wanted_privacy_gap": 3.0, "conservative": False, "method": "scaleot",
        "alpha": 0.5, "beta": 0.25, "adapter_bottom": 2, "adapter_top": 2,
        "privacy_gap": {"mean": 4.1, "ci95": [1.2, 7.0]}, "utility_gap": {"mean": 2.2, "ci95": [0.1, 4.4]},
        "plug_in": 88.4, "tasks": ["bbc_news"]}]})


class JobStatus(BaseModel):
    job_id: str | None
    state: JobState = Field(description="queued | running | succeeded | failed | cancelled")
    progress: float = Field(0.0, ge=0, le=1)
    message: str = ""
    error: str | None = None
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


class EmulatorRequest(BaseModel):
    """What a data owner asks for (POST /v1/emulators), every number bounded; the server's EmulatorSpec
    adds what it derives from it (the id, whether it needs a stage-1 profile)."""

    base_model: str = Field(..., min_length=1, max_length=400, description="a base model served here (GET /v1/models)")
    method: Literal["scaleot", "uniform"] = "scaleot"
    adapter_bottom: int = Field(2, ge=0, le=MAX_ADAPTER_BLOCKS, description="first blocks shipped unchanged and tuned")
    adapter_top: int = Field(2, ge=0, le=MAX_ADAPTER_BLOCKS, description="last blocks shipped unchanged and tuned")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="fraction of middle blocks replaced/dropped")
    beta: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of attention rank removed by SRC")
    options: EmulatorOptions = Field(default_factory=EmulatorOptions)
    calibration_prompts: str | None = Field(
        None, min_length=1, max_length=64,
        description="id of a prompt set you uploaded (POST /v1/prompt-sets): the emulator's harmonizers are refined "
                    "on those unlabelled prompts toward the full model (scaleot with harmonizers only); such an "
                    "emulator and its prompts are visible to you alone")

    @model_validator(mode="after")
    def _adapter_not_empty(self) -> Self:
        if self.adapter_bottom + self.adapter_top == 0:
            raise ValueError("adapter_bottom + adapter_top must be at least 1: the adapter is what gets tuned")
        return self


class EmulatorFile(BaseModel):
    name: str
    size: int
    sha256: str | None = Field(description="from the manifest (None for manifest.json itself)")
    url: str


class EmulatorOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "emu-3f2a9c0d1e4b5a6c7d8e", "base_model": "smollm2-135m", "method": "scaleot",
        "spec": {"base_model": "smollm2-135m", "method": "scaleot", "adapter_bottom": 2, "adapter_top": 2,
                 "alpha": 0.5, "beta": 0.0},
        "state": "running", "progress": 0.42, "error": None,
        "status": {"job_id": "job-1a2b3c4d5e6f7a8b", "state": "running", "progress": 0.42,
                   "message": "stage 1 step 84/200"},
        "manifest": None, "files": [], "created_at": 1760000000.0}]})

    id: str
    base_model: str
    method: str
    spec: dict[str, Any]
    state: JobState = Field(description="queued | running | succeeded | failed | cancelled (= status.state)")
    progress: float = Field(0.0, description="0..1 (= status.progress)")
    error: str | None = Field(None, description="why it failed (= status.error)")
    status: JobStatus
    manifest: EmulatorManifest | None = None
    files: list[EmulatorFile] = Field(default_factory=list, description="downloadable once succeeded")
    created_at: float
    withdrawn: bool = Field(False, description="in the answer to a cancel: only your request was withdrawn, the "
                            "build goes on for the other data owners who asked for it (request it again to see it)")
    reused_equivalent: bool = Field(False, description="in the answer to a request: an existing emulator with the "
                                    "same layer plan (the same blocks kept, replaced, dropped and compressed, so the "
                                    "same weights) answers it; its spec and id are those of the first request")
    note: str | None = Field(None, description="in the answer to a request: what the server did with it, when "
                             "that is not plain (an equivalent emulator reused)")


class EmulatorList(BaseModel):
    items: list[EmulatorOut]


class AdapterOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "ada-0f1e2d3c4b5a6978", "emulator_id": "emu-3f2a9c0d1e4b5a6c7d8e", "kind": "full",
        "files": {"adapter.safetensors": {"sha256": "ab12...", "size": 28311552}}, "size": 28311552,
        "created_at": 1760000000.0}]})

    id: str
    emulator_id: str
    kind: str = Field(description="full (adapter.safetensors) or lora (PEFT directory)")
    files: dict[str, FileEntry]
    size: int
    created_at: float


class AdapterList(BaseModel):
    items: list[AdapterOut]


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"adapter_id": "ada-0f1e2d3c4b5a6978", "task": "winowhy", "limit": 200}]},
    )

    adapter_id: str = Field(min_length=1, max_length=64)
    task: str = Field(min_length=1, max_length=200, description="a built-in task name (GET /v1/tasks)")
    limit: int | None = Field(None, ge=1, le=MAX_EVAL_LIMIT,
                              description="evaluate on the first N test examples (default: SCALEOT_EVAL_LIMIT)")


class EvaluationOut(BaseModel):
    id: str
    adapter_id: str
    task: str
    source: str = Field(description="builtin or upload (a multiple-choice JSONL sent with the request)")
    limit: int | None
    state: JobState = Field(description="queued | running | succeeded | failed | cancelled (= status.state)")
    progress: float = Field(0.0, description="0..1 (= status.progress)")
    error: str | None = Field(None, description="why it failed (= status.error)")
    status: JobStatus
    result: EvaluationMatrix | None = None
    created_at: float


class EvaluationList(BaseModel):
    items: list[EvaluationOut]


class PromptSetOut(BaseModel):
    """An uploaded set of unlabelled prompts (for task calibration); only its owner sees it."""

    id: str
    n_prompts: int
    sha256: str = Field(description="of the prompt set's rows (what a calibrated emulator's id and manifest record)")
    created_at: float


class PromptSetList(BaseModel):
    items: list[PromptSetOut]


class AgreementResult(BaseModel):
    """Aggregates over the data owner's prompts only: never the full model's answer to any one prompt."""

    n_items: int = Field(description="prompts with at least two choices that were compared")
    agreement: float = Field(ge=0, le=1, description="share of prompts the emulator answers (zero-shot, most likely "
                             "choice) as the full model does")
    mean_kl: float = Field(ge=0, description="mean KL(full || emulator) of the answer distributions over the choices")
    threshold: float = Field(description="agreement at or above which adapters tuned on this emulator are likely to "
                             "transfer (measured: results/agreement-smollm2-135m-n150.json)")
    likely_to_transfer: bool
    verdict: str


class AgreementOut(BaseModel):
    id: str
    emulator_id: str
    n_prompts: int = Field(description="rows of the uploaded prompt set")
    state: JobState = Field(description="queued | running | succeeded | failed | cancelled (= status.state)")
    progress: float = Field(0.0, description="0..1 (= status.progress)")
    error: str | None = Field(None, description="why it failed (= status.error)")
    status: JobStatus
    result: AgreementResult | None = None
    created_at: float


class AgreementList(BaseModel):
    items: list[AgreementOut]


class TaskInfo(BaseModel):
    name: str
    kind: str
    description: str


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "The capital of France is", "max_new_tokens": 32,
                                         "temperature": 0.0}]},
    )

    prompt: str = Field(min_length=1, max_length=20_000, description="prompt tokens + max_new_tokens must fit the "
                        "model's context window")
    max_new_tokens: int = Field(32, ge=1, le=MAX_NEW_TOKENS, description="capped by SCALEOT_GENERATE_MAX_NEW_TOKENS")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description=f"0 = greedy decoding; sampling needs at least "
                               f"{MIN_SAMPLING_TEMPERATURE}")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="sampling seed (temperature > 0)")
    # strict: JSON true/false only; 0, 1 or "true" are refused (422 naming the field), not read as a switch
    chat: StrictBool = Field(False, description="wrap the prompt in the tokenizer's chat template (instruct models)")

    @field_validator("temperature")
    @classmethod
    def _greedy_or_samplable(cls, value: float) -> float:
        if 0.0 < value < MIN_SAMPLING_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_SAMPLING_TEMPERATURE}")
        return value


class GenerateOut(BaseModel):
    adapter_id: str
    prompt: str
    completion: str
    new_tokens: int
    seconds: float
    cached_model: bool = Field(description="whether the plugged model came from the LRU cache")


class OwnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "hospital-a"}]})

    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class OwnerKey(BaseModel):
    owner_id: str
    name: str
    key_id: str
    api_key: str = Field(description="shown once; only its sha256 is stored")


class OwnerOut(BaseModel):
    id: str
    name: str
    created_at: float
    keys: int
