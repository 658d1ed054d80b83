"""What an emulator request resolves to before anything is built: the stage-1 config it needs and
its content-derived id (the same id the built manifest will carry)."""

from __future__ import annotations

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.profile import Stage1Config
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import base_profile_id


def stage1_config(spec: EmulatorSpec, overrides: dict[str, int]) -> Stage1Config | None:
    if not spec.uses_profile:
        return None
    return Stage1Config.model_validate(
        {"adapter_bottom": spec.adapter_bottom, "adapter_top": spec.adapter_top, **overrides}
    )


def emulator_id(spec: EmulatorSpec, base: LoadedBase, stage1: Stage1Config | None) -> str:
    pid = base_profile_id(base, stage1) if stage1 is not None else None
    return spec.emulator_id(base.weights_sha256, pid, base.dtype)
