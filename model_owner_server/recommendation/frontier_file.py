"""The frontier file: one schema for its writer (`scaleot-bench frontier`) and its readers (the service's
SCALEOT_FRONTIERS, `scaleot-server emulators recommend`). A paper-table result reads as one too
(`as_frontier`): its summary entries are points of the same shape, measured on more tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]


class Gap(BaseModel):
    """A mean with its 95% interval, in points."""

    mean: Finite
    ci95: tuple[Finite, Finite]


class Mean(BaseModel):
    mean: Finite


class AdapterSplit(BaseModel):
    bottom: StrictInt = Field(ge=0, le=1024)
    top: StrictInt = Field(ge=0, le=1024)


class FrontierPoint(BaseModel):
    """One measured emulator: what the rule reads; every other measured column is kept as it is."""

    model_config = ConfigDict(extra="allow")

    variant: str = ""
    method: str
    alpha: Finite
    beta: Finite
    privacy_gap: Gap | None = None  # None: a point whose tuning failed
    utility_gap: Gap | None = None
    plug_in: Mean | None = None


class FrontierFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    benchmark: Literal["frontier"]
    source: str | None = None  # "paper-table" when read from one
    model: str | None = None
    profile_id: str | None = None
    adapter: AdapterSplit = Field(default_factory=lambda: AdapterSplit(bottom=2, top=2))  # 2 + 2 before the record
    budget: dict[str, Any] | None = None
    tasks: list[str] = Field(default_factory=list)
    # task -> adapter learning rate chosen on its validation split (absent in files written before it was kept)
    learning_rates: dict[str, Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]] = Field(default_factory=dict)
    points: list[FrontierPoint]

    @field_validator("adapter", mode="before")
    @classmethod
    def _unrecorded_split(cls, value: Any) -> Any:
        return {"bottom": 2, "top": 2} if value is None else value  # written as null before the split was recorded


def as_frontier(paper_table: dict[str, Any]) -> dict[str, Any]:
    """A paper-table result read as a frontier: only variants that reached every task of the run are points
    (a mean over fewer tasks would not compare with the others)."""
    raw = paper_table.get("tasks")  # not a list: left as it is, for the schema to refuse
    tasks = [t.get("task") if isinstance(t, dict) else t for t in raw] if isinstance(raw, list) else raw
    summary = paper_table.get("summary")
    n_tasks = len(tasks) if isinstance(tasks, list) else None
    points = [s for s in summary if isinstance(s, dict) and s.get("n_tasks", n_tasks) == n_tasks] \
        if isinstance(summary, list) else None
    out = {"benchmark": "frontier", "source": "paper-table", "model": paper_table.get("model"),
           "profile_id": paper_table.get("profile_id"), "budget": paper_table.get("budget"), "tasks": tasks,
           "points": points}
    if paper_table.get("adapter") is not None:
        out["adapter"] = paper_table["adapter"]
    return out


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the file"
    return f"{where}: {error['msg']}"


def parse_frontier(data: Any, name: str = "the frontier") -> FrontierFile:
    """A frontier (or a paper-table read as one) from parsed JSON; ValueError (one line naming the field)."""
    not_frontier = f"{name} is not a frontier result (scaleot-bench frontier or scaleot-bench paper-table writes one)"
    if isinstance(data, dict) and data.get("benchmark") == "paper-table":
        data = as_frontier(data)
    if not isinstance(data, dict) or data.get("benchmark") != "frontier":
        raise ValueError(not_frontier)
    try:
        return FrontierFile.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{not_frontier}: {_first_problem(exc)}") from None


def load_frontier(path: Path) -> FrontierFile:
    """The frontier file at `path`; ValueError (one line) for anything else, FileNotFoundError when missing."""
    try:
        data = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a frontier result (scaleot-bench frontier or scaleot-bench "
                         "paper-table writes one)") from None
    return parse_frontier(data, str(path))
