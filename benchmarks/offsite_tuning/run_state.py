"""The per-run state file of a resumable benchmark: finished tasks and chosen learning rates.

Written atomically after every finished task, after each task's learning-rate selection, and inside a
task after its reference rows and after each variant row, so a run that is stopped, killed or loses its
machine resumes where it was with the same command. The state is bound to the run's configuration by a
fingerprint: a changed command (another budget, seeds, model or profile) refuses to mix with old results
unless restarted; the keys a caller declares unbound (the paper-table's tasks and variants) may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from benchmarks.offsite_tuning.records import Cell, TaskResult
from benchmarks.offsite_tuning.tuning_select import LrChoice

STATE_VERSION = 1


class StateMismatchError(ValueError):
    """The state file belongs to a run with another configuration."""


class RunState(BaseModel):
    version: int = STATE_VERSION
    fingerprint: str
    config: dict[str, Any]
    lrs: dict[str, dict[str, LrChoice]] = Field(default_factory=dict)  # task -> kind -> choice
    # task -> kind -> f"{lr:g}" -> validation accuracy: the rates scored so far by an unfinished selection
    lr_scores: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    # task -> reference row -> its seeds finished so far, while the task's reference rows are running
    reference_cells: dict[str, dict[str, Cell]] = Field(default_factory=dict)
    tasks: dict[str, TaskResult] = Field(default_factory=dict)  # finished tasks, in finishing order
    # a task stopped after its reference rows: those and the variant rows done so far (resumed, not redone)
    partial: dict[str, TaskResult] = Field(default_factory=dict)


def fingerprint(config: dict[str, Any], unbound: tuple[str, ...] = ()) -> str:
    """Hash of the configuration without its `unbound` keys (those a resumed run may change)."""
    bound = {k: v for k, v in config.items() if k not in unbound}
    payload = json.dumps({"version": STATE_VERSION, **bound}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def open_state(path: Path, config: dict[str, Any], restart: bool = False, unbound: tuple[str, ...] = ()) -> RunState:
    """The saved state of this run configuration, or a fresh one (`restart` discards a saved state).

    The saved configuration is compared without its `unbound` keys (recomputed from the stored config,
    so states written before a key became unbound still resume); the state then takes this run's config."""
    expected = fingerprint(config, unbound)
    if path.is_file() and not restart:
        state = RunState.model_validate_json(path.read_text())
        saved = fingerprint(state.config, unbound)
        if saved != expected:
            raise StateMismatchError(
                f"{path} holds a run with another configuration (fingerprint {saved}, this run "
                f"{expected}); restart it (--restart) or write under another --label")
        state.fingerprint, state.config = expected, config
        return state
    return RunState(fingerprint=expected, config=config)


def save_state(path: Path, state: RunState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(state.model_dump_json())
    os.replace(tmp.name, path)
