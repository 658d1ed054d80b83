"""What an emulator request asks for, validated, with a stable id (same request -> same emulator)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from shared.manifest import EmulatorOptions


class EmulatorSpec(BaseModel):
    base_model: str = Field(..., description="registered base model name or local HF directory")
    method: Literal["scaleot", "uniform"] = "scaleot"
    adapter_bottom: int = Field(2, ge=0, description="first blocks shipped unchanged and tuned")
    adapter_top: int = Field(2, ge=0, description="last blocks shipped unchanged and tuned")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="fraction of middle blocks replaced/dropped")
    beta: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of attention rank removed by SRC")
    options: EmulatorOptions = Field(default_factory=EmulatorOptions)

    @model_validator(mode="after")
    def _adapter_not_empty(self) -> EmulatorSpec:
        if self.adapter_bottom + self.adapter_top == 0:
            raise ValueError("adapter_bottom + adapter_top must be at least 1: the adapter is what gets tuned")
        return self

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
    def distills(self) -> bool:
        """Whether stage 2 distils the kept middle blocks (Offsite-Tuning's OT-KD emulator)."""
        return self.method == "uniform" and self.options.distill

    def emulator_id(self, base_weights_sha256: str, profile_id: str | None, dtype: str = "float32") -> str:
        """Same request, base weights, profile and dtype -> same id (float32 keeps the ids it always had).
        The profile counts only for an emulator that uses one (`uses_profile`): a caller may pass its
        profile for every variant."""
        payload = self.model_dump(mode="json", exclude={"base_model": True, "options": {"refit", "distill"}})
        if self.refits_harmonizers:  # only then do the weights differ: every other emulator keeps its earlier id
            payload["refit"] = True
        if self.distills:
            payload["distill"] = True
        payload.update(base=base_weights_sha256, profile=profile_id if self.uses_profile else None)
        if dtype != "float32":
            payload["dtype"] = dtype
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"emu-{digest[:20]}"
