"""The served copy of a base model: its block leaves route each batch row through that row's adapter.

Every module inside the decoder blocks that holds parameters (projections, norms, GPT-2's Conv1D) is
wrapped in a `RoutedLeaf`. Before each forward the engine sets `Router.groups` (which rows belong to
which adapter); a leaf that no group's adapter changes runs once on the whole batch (the shared middle
blocks, always), one that some adapter changes runs per group on that group's rows. Attention, masks,
positions and the KV cache are untouched: they see one ordinary batch. Routing at the leaves, not at
the blocks, is what keeps this family-agnostic: a block's forward and its cache updates stay the
model's own code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from transformers import PreTrainedModel

from model_owner_server.serving.adapters import LoadedAdapter
from shared.blocks import find_block_stack


@dataclass(frozen=True)
class Group:
    rows: torch.Tensor  # row indices of the batch (on the serving device)
    adapter: LoadedAdapter | None  # None: the bare base model


class Router:
    """The routing of the batch being run; set by the engine (one thread per served model runs it)."""

    def __init__(self) -> None:
        self.groups: list[Group] = []


class RoutedLeaf(nn.Module):
    def __init__(self, inner: nn.Module, path: str, router: Router) -> None:
        super().__init__()
        self.inner = inner
        self.path = path
        self._router = router  # a plain attribute (no submodule): not part of the module tree

    def __getattr__(self, name: str) -> Any:
        # attention code may read e.g. `self.q_proj.weight`: answer with the wrapped module's attribute
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def _run(self, adapter: LoadedAdapter | None, x: torch.Tensor) -> torch.Tensor:
        if adapter is not None:
            params = adapter.full.get(self.path)
            if params is not None:
                out: torch.Tensor = functional_call(self.inner, params, (x,))
                return out
            pair = adapter.lora.get(self.path)
            if pair is not None:  # unmerged LoRA: base(x) + scale * B(A(x)), as PEFT's forward (eval: no dropout)
                lora = torch.nn.functional.linear(torch.nn.functional.linear(x, pair.a), pair.b)
                return self.inner(x) + lora * pair.scale
        return self.inner(x)

    def _changed_by(self, adapter: LoadedAdapter | None) -> bool:
        return adapter is not None and (self.path in adapter.full or self.path in adapter.lora)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self._router.groups
        changing = [g for g in groups if self._changed_by(g.adapter)]
        if not changing:
            return self.inner(x)
        if len(groups) == 1:
            return self._run(groups[0].adapter, x)
        batch = sum(int(g.rows.numel()) for g in groups)
        if x.shape[0] % batch:
            raise RuntimeError(f"{self.path}: input {tuple(x.shape)} is not batch-first for {batch} rows; the model "
                               "cannot be routed per row")
        per_row = x.shape[0] // batch  # OPT's MLP flattens (rows, tokens): row r owns [r*per_row, (r+1)*per_row)
        out: torch.Tensor | None = None
        unchanged = [_flat(g.rows, per_row) for g in groups if not self._changed_by(g.adapter)]
        parts: list[tuple[torch.Tensor, LoadedAdapter | None]] = [(_flat(g.rows, per_row), g.adapter)
                                                                   for g in changing]
        if unchanged:  # every row the base leaf serves, in one call
            parts.append((torch.cat(unchanged), None))
        for rows, adapter in parts:
            y = self._run(adapter, x.index_select(0, rows))
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out.index_copy_(0, rows, y)
        assert out is not None
        return out


def _flat(rows: torch.Tensor, per_row: int) -> torch.Tensor:
    if per_row == 1:
        return rows
    return (rows[:, None] * per_row + torch.arange(per_row, device=rows.device)).flatten()


def routed_copy(model: PreTrainedModel, device: torch.device) -> tuple[PreTrainedModel, Router, dict[str, nn.Module]]:
    """(the served copy, its router, its routed leaves by path in `model`).

    On the base's own device the copy shares every parameter and buffer with `model` (only module objects
    are new), so serving costs no second model; on another device it is one copy there."""
    same_device = next(model.parameters()).device == device
    if same_device:
        memo: dict[int, Any] = {id(t): t for t in [*model.parameters(), *model.buffers()]}
        served = copy.deepcopy(model, memo)
    else:
        served = copy.deepcopy(model)
        served = served.to(device)  # type: ignore[arg-type]  # transformers types its to() as a dtype cast
    served.eval()
    router = Router()
    stack = find_block_stack(served)
    leaves: dict[str, nn.Module] = {}
    for index, block in enumerate(stack.blocks):
        owners = [(name, module) for name, module in block.named_modules()
                  if name and any(True for _ in module.parameters(recurse=False))]
        for name, module in owners:
            if any(True for _ in module.children()):
                continue  # a module with parameters and children (rare): its children are routed, it is shared
            path = f"{stack.path}.{index}.{name}"
            leaf = RoutedLeaf(module, path, router)
            block.set_submodule(name, leaf)
            leaves[path] = leaf
    return served, router, leaves
