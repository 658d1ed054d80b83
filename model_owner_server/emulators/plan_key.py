"""What an emulator contains, as one hash: its layer plan (which blocks are adapter, kept, SRC-compressed
at which ranks, harmonizer-replaced or dropped) and everything else that determines its weights.

The emulator id hashes the request's raw numbers, so alpha 0.41 and 0.410000001 (same plan) had two ids
and two identical builds. The ids cannot change (results and caches name them); instead each emulator
also records this plan hash, and a request whose plan already exists is answered by that emulator.
beta enters only through the SRC ranks (and whether stage 2 re-fits), so equal ranks are one emulator too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.build import plan_layers
from model_owner_server.emulators.profile import (
    HARMONIZERS_FILE,
    PROFILE_JSON,
    PROFILE_VERSION,
    ImportanceProfile,
    ProfileMeta,
    Stage1Config,
    profile_dir,
)
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import base_profile_id
from shared.blocks import activation_name, find_block_stack
from shared.harmonizer import HarmonizerConfig
from shared.manifest import LayerEntry

PLAN_KEY_VERSION = 1  # bump when stage 2 starts to depend on something this hash leaves out


def plan_sha256(spec: EmulatorSpec, base_sha256: str, dtype: str, profile_id: str | None,
                layers: list[LayerEntry], harmonizer: HarmonizerConfig | None) -> str:
    """The plan hash: the same value from a request (`request_plan_sha256`) and from a built manifest."""
    payload: dict[str, Any] = {
        "version": PLAN_KEY_VERSION,
        "base": base_sha256,
        "dtype": dtype,
        "method": spec.method,
        # the raw switches (also those a method ignores): never merges emulators whose weights might differ
        "options": spec.options.model_dump(mode="json"),
        "refit": spec.refits_harmonizers,
        "distill": spec.distills,
        # the profile gives the importance order, the harmonizer weights and the seed of re-fit/distillation
        "profile": profile_id if spec.uses_profile else None,
        "layers": [entry.model_dump(mode="json") for entry in layers],
        "harmonizer": harmonizer.model_dump(mode="json") if harmonizer is not None else None,
        # a calibrated emulator stays its owner's alone (as in its id)
        "calibration": ({"prompts": spec.calibration_sha256, "owner": spec.calibration_owner}
                        if spec.calibration_sha256 is not None else None),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cached_profile_meta(pid: str) -> ImportanceProfile | None:
    """The cached profile's importance and harmonizer config without its weights (profile.json only: cheap
    enough for a request); None when it is not cached, or in a format stage 2 would rebuild."""
    directory = profile_dir(pid)
    if not ((directory / PROFILE_JSON).is_file() and (directory / HARMONIZERS_FILE).is_file()):
        return None
    try:
        raw = json.loads((directory / PROFILE_JSON).read_text())
        if not isinstance(raw, dict) or raw.get("version") != PROFILE_VERSION:
            return None
        return ImportanceProfile(ProfileMeta.model_validate(raw), {})
    except (OSError, ValueError):  # half-written or damaged: the build will say; here, just unknown
        return None


def request_plan_sha256(spec: EmulatorSpec, base: LoadedBase, stage1: Stage1Config | None) -> str | None:
    """The plan hash of a request, from the loaded base and, when the emulator uses one, the cached
    stage-1 profile. None when the plan cannot be known yet (a profile that stage 1 has not produced):
    the request then goes by its id alone, and the build records the plan when it finishes."""
    pid = base_profile_id(base, stage1) if stage1 is not None else None
    profile = None
    if pid is not None:
        profile = _cached_profile_meta(pid)
        if profile is None:
            return None
    stack = find_block_stack(base.model)
    plan = plan_layers(spec, len(stack), stack.blocks, profile, activation_name(base.model.config))
    return plan_sha256(spec, base.weights_sha256, base.dtype, pid, plan.entries, plan.harmonizer)
