"""The per-run state file of a resumable benchmark: finished tasks and chosen learning rates.

Written atomically after every finished task (and after each task's learning-rate selection), so a
run that is stopped, killed or loses its machine resumes at the first unfinished task with the same
command. The state is bound to the run's configuration by a fingerprint: a changed command (other
tasks' budget, variants, seeds, model or profile) refuses to mix with old results unless restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from model_owner_server.bench.records import TaskResult
from model_owner_server.bench.tuning_select import LrChoice

STATE_VERSION = 1


class StateMismatchError(ValueError):
    """The state file belongs to a run with another configuration."""


class RunState(BaseModel):
    version: int = STATE_VERSION
    fingerprint: str
    config: dict[str, Any]
    lrs: dict[str, dict[str, LrChoice]] = Field(default_factory=dict)  # task -> kind -> choice
    tasks: dict[str, TaskResult] = Field(default_factory=dict)  # finished tasks, in finishing order


def fingerprint(config: dict[str, Any]) -> str:
    payload = json.dumps({"version": STATE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def open_state(path: Path, config: dict[str, Any], restart: bool = False) -> RunState:
    """The saved state of this run configuration, or a fresh one (`restart` discards a saved state)."""
    expected = fingerprint(config)
    if path.is_file() and not restart:
        state = RunState.model_validate_json(path.read_text())
        if state.fingerprint != expected:
            raise StateMismatchError(
                f"{path} holds a run with another configuration (fingerprint {state.fingerprint}, this run "
                f"{expected}); restart it (--restart) or write under another --label")
        return state
    return RunState(fingerprint=expected, config=config)


def save_state(path: Path, state: RunState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(state.model_dump_json())
    os.replace(tmp.name, path)
