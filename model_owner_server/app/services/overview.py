"""What the dashboard's overview shows about the served base models: prepared or not, the frontier loaded,
and the stage-1 profiles cached for each (their settings and fidelity metrics, read from `profile.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from statistics import fmean
from typing import Any

from model_owner_server import base_models
from model_owner_server.app.core.state import AppState
from model_owner_server.emulators.profile import PROFILE_JSON, profiles_root

MAX_PROFILES = 200  # profile folders read per overview


@dataclass(frozen=True)
class ProfileSummary:
    profile_id: str
    settings: dict[str, Any]  # the stage-1 settings that matter to a reader
    replaced: int | None  # blocks the deployed mask replaced at the last step
    final_loss: float | None
    final_nmse: float | None  # hidden-state error against the full model at the last step
    mean_fit_error: float | None  # of the regression-initialised harmonizers, held out
    wall_seconds: float


@dataclass
class ServedModel:
    name: str
    kind: str
    prepared: bool
    description: str
    frontier_points: int | None  # None: no frontier loaded (SCALEOT_FRONTIERS)
    profiles: list[ProfileSummary] = field(default_factory=list)


SHOWN_SETTINGS = ("steps", "batch_size", "seq_len", "harmonizer_rank", "adapter_bottom", "adapter_top", "lr")


@lru_cache(maxsize=256)
def _read_profile(path: Path, mtime_ns: int) -> tuple[str, ProfileSummary] | None:
    """(base model name, summary) of one profile.json; cached by its modification time (profiles never change)."""
    try:
        raw = json.loads(path.read_text())
        config = raw.get("config") or {}
        curve = raw.get("curve") or []
        last = curve[-1] if curve else {}
        fit = (raw.get("init") or {}).get("fit_error") or []
        return str(raw["base_model"]), ProfileSummary(
            profile_id=str(raw["profile_id"]), settings={k: config[k] for k in SHOWN_SETTINGS if k in config},
            replaced=last.get("replaced"), final_loss=last.get("loss"), final_nmse=last.get("nmse"),
            mean_fit_error=fmean(fit) if fit else None, wall_seconds=float(raw.get("wall_seconds") or 0.0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a profile being written or of another format: not shown


def cached_profiles() -> dict[str, list[ProfileSummary]]:
    """Base model name -> its cached stage-1 profiles."""
    out: dict[str, list[ProfileSummary]] = {}
    try:
        folders = sorted(profiles_root().iterdir())[:MAX_PROFILES]
    except OSError:
        return out
    for folder in folders:
        path = folder / PROFILE_JSON
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        found = _read_profile(path, mtime)
        if found is not None:
            out.setdefault(found[0], []).append(found[1])
    return out


def served_models(state: AppState) -> list[ServedModel]:
    profiles = cached_profiles()
    out = []
    for name in state.settings.models:
        try:
            info = base_models.describe(name)
        except (OSError, ValueError) as exc:
            info = {"name": name, "kind": "local", "prepared": False, "description": f"unavailable: {exc}"}
        frontier = state.frontiers.get(name)
        out.append(ServedModel(name=name, kind=str(info["kind"]), prepared=bool(info["prepared"]),
                               description=str(info["description"]),
                               frontier_points=len(frontier.points) if frontier else None,
                               profiles=profiles.get(name, [])))
    return out
