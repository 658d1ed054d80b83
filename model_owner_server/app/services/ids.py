"""What an emulator request resolves to before anything is built: the stage-1 config it needs and
its content-derived id (the same id the built manifest will carry)."""

from __future__ import annotations

from typing import Any

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.profile import Stage1Config, stage1_config
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import base_profile_id


def spec_stage1_config(spec: EmulatorSpec, overrides: dict[str, Any]) -> Stage1Config | None:
    """The stage-1 config an emulator request needs (None when it uses no profile)."""
    return stage1_config(overrides, spec.adapter_bottom, spec.adapter_top) if spec.uses_profile else None


def emulator_id(spec: EmulatorSpec, base: LoadedBase, stage1: Stage1Config | None) -> str:
    pid = base_profile_id(base, stage1) if stage1 is not None else None
    return spec.emulator_id(base.weights_sha256, pid, base.dtype)
