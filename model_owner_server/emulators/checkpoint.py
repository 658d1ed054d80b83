"""Resumable stage-1 checkpoints: harmonizers, logits, optimiser and RNG state, all in safetensors.

A checkpoint lives next to the profile cache as `.<profile_id>.partial/`; it is written to a
temporary directory and renamed, so a crash leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model_owner_server.emulators.profile import CurvePoint, Stage1Init
from shared.atomic import atomic_directory
from shared.harmonizer import Harmonizer

STATE_FILE = "state.safetensors"
META_FILE = "state.json"


def _flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    state = optimizer.state_dict()
    tensors = {
        f"{prefix}.{index}.{name}": value.detach().to("cpu", copy=True).reshape(value.shape)
        for index, entries in state["state"].items()
        for name, value in entries.items()
    }
    return tensors, state["param_groups"]


def _restore_optimizer(
    prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: Any
) -> None:
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        parts = key.split(".", 2)  # "hopt.<param index>.<state name>"; other keys ("scores", ...) differ
        if len(parts) == 3 and parts[0] == prefix:
            per_param.setdefault(int(parts[1]), {})[parts[2]] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


class Stage1Checkpoint:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(
        self,
        step: int,
        harmonizers: dict[int, Harmonizer],
        scores: torch.Tensor,
        h_opt: torch.optim.Optimizer,
        s_opt: torch.optim.Optimizer,
        generator: torch.Generator,
        curve: list[CurvePoint],
        init: Stage1Init | None = None,
    ) -> None:
        tensors = {  # CPU copies: a rank on a GPU checkpoints the same way
            f"h.{i}.{k}": v.detach().to("cpu", copy=True)
            for i, h in harmonizers.items()
            for k, v in h.state_dict().items()
        }
        tensors["scores"] = scores.detach().clone()
        tensors["generator"] = generator.get_state().clone()
        h_tensors, h_groups = _flatten_optimizer("hopt", h_opt)
        s_tensors, s_groups = _flatten_optimizer("sopt", s_opt)
        tensors.update(h_tensors)
        tensors.update(s_tensors)
        meta = {
            "step": step,
            "hopt_groups": h_groups,
            "sopt_groups": s_groups,
            "curve": [p.model_dump() for p in curve],
            "init": init.model_dump() if init is not None else None,
        }
        with atomic_directory(self.directory) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / STATE_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta))

    def restore(
        self,
        harmonizers: dict[int, Harmonizer],
        scores: torch.Tensor,
        h_opt: torch.optim.Optimizer,
        s_opt: torch.optim.Optimizer,
        generator: torch.Generator,
        curve: list[CurvePoint],
    ) -> int:
        """Load the checkpoint if there is a complete one; returns the step to resume from (0 if none)."""
        if not (self.directory / META_FILE).is_file() or not (self.directory / STATE_FILE).is_file():
            return 0
        meta = json.loads((self.directory / META_FILE).read_text())
        tensors = load_file(self.directory / STATE_FILE)
        for i, h in harmonizers.items():
            prefix = f"h.{i}."
            h.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
        with torch.no_grad():
            scores.copy_(tensors["scores"])
        generator.set_state(tensors["generator"])
        _restore_optimizer("hopt", h_opt, tensors, meta["hopt_groups"])
        _restore_optimizer("sopt", s_opt, tensors, meta["sopt_groups"])
        curve[:] = [CurvePoint.model_validate(p) for p in meta["curve"]]
        return int(meta["step"])

    def restore_init(self) -> Stage1Init | None:
        """The initialisation recorded with the checkpoint (None without a checkpoint)."""
        if not (self.directory / META_FILE).is_file():
            return None
        init = json.loads((self.directory / META_FILE).read_text()).get("init")
        return Stage1Init.model_validate(init) if init is not None else None

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
