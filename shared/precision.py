"""Floating-point precision of frozen weights, and fp32 master copies of what is trained over them.

A base model, an emulator and generation run in one dtype (`float32`, `bfloat16`, or `float16` on a
GPU). What is trained (stage-1 harmonizers, the data owner's adapter blocks) keeps float32 weights
and optimiser state: `fp32_master` casts a module to float32 and its floating inputs to float32 at
its boundary, and its outputs back to the caller's dtype, so the frozen half-precision network
around it never sees a float32 tensor and the trained weights never lose updates to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

DtypeName = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[DtypeName, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                        "float16": torch.float16}
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


class PrecisionError(ValueError):
    """An unknown dtype name, or a dtype the device cannot run."""


def dtype_name(dtype: torch.dtype) -> DtypeName:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise PrecisionError(f"unsupported dtype {dtype}; use one of {', '.join(DTYPES)}")


def parse_dtype(name: str) -> torch.dtype:
    """`float32`, `bfloat16`, `float16` (or fp32 / bf16 / fp16) -> torch dtype; anything else is refused."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    for known, dtype in DTYPES.items():
        if key == known:
            return dtype
    raise PrecisionError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")


def check_device(dtype: torch.dtype, device: str | torch.device = "cpu") -> None:
    """Refuse float16 on the CPU: there it is slow, and its range overflows where bfloat16's does not."""
    if dtype == torch.float16 and torch.device(device).type == "cpu":
        raise PrecisionError("float16 needs a GPU; on the CPU use bfloat16 (the same memory, float32's range)")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of a model's floating-point weights (the first one; models here use a single dtype)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    if isinstance(value, list):
        return [_cast(v, dtype) for v in value]
    return value


def _first_float(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.dtype | None:
    for value in (*args, kwargs.get("hidden_states")):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    return None


def fp32_master(module: nn.Module) -> Callable[[], None]:
    """Make `module` a float32 island in a network of any dtype, in place; returns the undo.

    Its floating parameters and buffers become float32; floating tensors passed in (hidden states,
    rotary tables, float masks) are cast to float32 and floating outputs back to the dtype of the
    incoming hidden states. On a float32 network every cast is a no-op. Module names and state-dict
    keys stay the same. The undo removes the hooks and rounds every tensor back to its own dtype."""
    tensors = [*module.parameters(), *module.buffers()]
    original = [t.dtype for t in tensors]
    for t in tensors:
        if t.is_floating_point():
            t.data = t.data.float()
    incoming: list[torch.dtype] = []

    def before(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        incoming.append(_first_float(args, kwargs) or torch.float32)
        return _cast(args, torch.float32), {k: _cast(v, torch.float32) for k, v in kwargs.items()}

    def after(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        return _cast(output, incoming.pop())

    handles: list[RemovableHandle] = [module.register_forward_pre_hook(before, with_kwargs=True),
                                      module.register_forward_hook(after, with_kwargs=True)]

    def undo() -> None:
        for handle in handles:
            handle.remove()
        for t, dtype in zip(tensors, original, strict=True):
            t.data = t.data.to(dtype)

    return undo
