"""What an emulator request asks for, validated, with a stable id (same request -> same emulator)."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field

from shared.api import EmulatorRequest


class EmulatorSpec(EmulatorRequest):
    """An emulator request as the model owner builds it: the wire fields (`shared.api.EmulatorRequest`),
    plus what follows from them. The offline CLI also accepts a local model directory of any length."""

    base_model: str = Field(..., min_length=1, description="registered base model name or local HF directory")
    # set by the server for a calibrated emulator: the prompt set's hash and the owner who sent it, both part of
    # the id, so a calibrated emulator is never shared with (or confirmed to) another data owner
    calibration_sha256: str | None = None
    calibration_owner: str | None = None

    @classmethod
    def from_request(cls, request: EmulatorRequest) -> EmulatorSpec:
        return cls.model_validate(request.model_dump())

    def check_against(self, num_layers: int) -> None:
        """The adapter must leave at least one middle block to compress."""
        if self.adapter_bottom + self.adapter_top >= num_layers:
            raise ValueError(
                f"adapter_bottom + adapter_top = {self.adapter_bottom + self.adapter_top} leaves no middle "
                f"blocks in a {num_layers}-block model; use fewer adapter blocks"
            )

    @property
    def uses_profile(self) -> bool:
        """Whether the emulator needs a stage-1 profile (its importance or harmonizers); only then does
        the profile id enter the emulator id."""
        return self.method == "scaleot" and (self.options.importance or self.options.harmonizers)

    @property
    def refits_harmonizers(self) -> bool:
        """Whether stage 2 re-fits the harmonizers after SRC: only when SRC compresses kept blocks around them."""
        return (self.method == "scaleot" and self.options.harmonizers and self.options.src and self.beta > 0
                and self.options.refit)

    @property
    def calibrates(self) -> bool:
        """Whether stage 2 refines the harmonizers on a data owner's prompts (task calibration)."""
        return self.calibration_sha256 is not None

    @property
    def distills(self) -> bool:
        """Whether stage 2 distils the kept middle blocks (Offsite-Tuning's OT-KD emulator)."""
        return self.method == "uniform" and self.options.distill

    def emulator_id(self, base_weights_sha256: str, profile_id: str | None, dtype: str = "float32") -> str:
        """Same request, base weights, profile and dtype -> same id (float32 keeps the ids it always had).
        The profile counts only for an emulator that uses one (`uses_profile`): a caller may pass its
        profile for every variant."""
        payload = self.model_dump(mode="json", exclude={"base_model": True, "options": {"refit", "distill"},
                                                        "calibration_prompts": True, "calibration_sha256": True,
                                                        "calibration_owner": True})
        if self.refits_harmonizers:  # only then do the weights differ: every other emulator keeps its earlier id
            payload["refit"] = True
        if self.distills:
            payload["distill"] = True
        payload.update(base=base_weights_sha256, profile=profile_id if self.uses_profile else None)
        if dtype != "float32":
            payload["dtype"] = dtype
        if self.calibration_sha256 is not None:  # only then: every uncalibrated emulator keeps its id
            payload["calibration"] = {"prompts": self.calibration_sha256, "owner": self.calibration_owner}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"emu-{digest[:20]}"
