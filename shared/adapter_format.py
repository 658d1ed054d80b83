"""The adapter artifact: the tuned adapter blocks, keyed by FULL-model block index.

A full-block adapter is `adapter.safetensors` whose tensor names are the base model's own parameter
names (`model.layers.29.mlp.down_proj.weight`), with metadata naming the emulator it was tuned on.
The emulator numbers its blocks differently once middle blocks are dropped, so the client remaps
emulator -> full indices when saving and the owner remaps full -> emulator to evaluate on it.
Validation reads the safetensors header first (names, shapes, dtypes) before loading any tensor.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shared.atomic import atomic_file
from shared.bounded_json import JSONLimitError, loads_bounded
from shared.manifest import EmulatorManifest

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_FORMAT = "scaleot-adapter/v1"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
MAX_HEADER_BYTES = 16 * 1024 * 1024

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class AdapterError(ValueError):
    """An adapter does not fit its emulator; `problems` lists every reason at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:20]) + (f"; ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(f"adapter rejected ({len(problems)} problem(s)): {shown}")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)


def remap_block_indices(keys_to_tensors: dict[str, torch.Tensor], stack_path: str,
                        mapping: dict[int, int]) -> dict[str, torch.Tensor]:
    """Rename `<stack_path>.<i>.` to `<stack_path>.<mapping[i]>.` in every key (others unchanged)."""
    pattern = re.compile(rf"(^|\.)({re.escape(stack_path)})\.(\d+)\.")

    def rename(key: str) -> str:
        return pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}.{mapping[int(m.group(3))]}.", key, count=1)

    return {rename(k): v for k, v in keys_to_tensors.items()}


def block_tensors(state: dict[str, torch.Tensor], stack_path: str, indices: list[int]) -> dict[str, torch.Tensor]:
    """The tensors of blocks `indices` of the stack at `stack_path`, as they are (not copied)."""
    prefixes = tuple(f"{stack_path}.{i}." for i in indices)
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def expected_adapter_tensors(full_state: dict[str, torch.Tensor], stack_path: str,
                             indices: list[int]) -> dict[str, TensorInfo]:
    """Every parameter of the adapter blocks in the full model: name -> (dtype, shape)."""
    return {k: TensorInfo(_dtype_name(v.dtype), tuple(v.shape))
            for k, v in block_tensors(full_state, stack_path, indices).items()}


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    return str(dtype)


def read_header(path: Path) -> SafetensorsHeader:
    """Parse a safetensors header without loading tensors (rejects anything that is not safetensors).

    The header is untrusted JSON: parsed with bounds (depth, number lengths), then every entry is
    checked against the format (dtype string, shape of non-negative integers, two ordered offsets
    whose span fits the shape, `__metadata__` a string-to-string map) so that nothing downstream
    meets a surprise type. Every problem raises AdapterError."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise AdapterError([f"{path.name}: not a safetensors file (shorter than 8 bytes)"])
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len <= 0 or header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise AdapterError([f"{path.name}: not a safetensors file (bad header length; a pickle or a "
                                "truncated file?). Save adapters with safetensors"])
        try:
            header = loads_bounded(f.read(header_len))
        except JSONLimitError as exc:
            raise AdapterError([f"{path.name}: safetensors header refused: {exc}"]) from None
        except (ValueError, UnicodeDecodeError):
            raise AdapterError([f"{path.name}: safetensors header is not valid JSON"]) from None
    if not isinstance(header, dict):
        raise AdapterError([f"{path.name}: safetensors header is not a JSON object"])
    problems: list[str] = []
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems.append(f"{path.name}: __metadata__ must be a JSON object of strings")
        metadata = {}
    tensors: dict[str, TensorInfo] = {}
    end = 0
    for name, info in header.items():
        parsed = _tensor_entry(info)
        if isinstance(parsed, str):
            problems.append(f"{path.name}: malformed header entry for {name[:200]!r}: {parsed}")
            continue
        tensors[name], stop = parsed
        end = max(end, stop)
    if 8 + header_len + end > size:
        problems.append(f"{path.name}: file is truncated ({size} bytes, header needs {8 + header_len + end})")
    if problems:
        raise AdapterError(problems)
    return SafetensorsHeader(tensors, dict(metadata))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entry(info: object) -> tuple[TensorInfo, int] | str:
    """(tensor info, end offset) of one header entry, or why it is malformed."""
    if not isinstance(info, dict):
        return "not an object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or len(dtype) > 16:
        return "dtype must be a short string"
    if not isinstance(shape, list) or len(shape) > 8 or not all(_is_count(d) for d in shape):
        return "shape must list at most 8 non-negative integers"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]):
        return "data_offsets must be two ordered non-negative integers"
    itemsize = _ITEMSIZE.get(dtype)
    if itemsize is not None and offsets[1] - offsets[0] != math.prod(shape) * itemsize:
        return (f"data_offsets span {offsets[1] - offsets[0]} bytes, shape {shape} of {dtype} needs "
                f"{math.prod(shape) * itemsize}")
    return TensorInfo(dtype, tuple(shape)), offsets[1]


def check_header(header: SafetensorsHeader, expected: dict[str, TensorInfo], source: str) -> list[str]:
    """Every missing, unexpected, mis-shaped or mis-typed tensor, as human-readable problems."""
    problems = [f"missing tensor {k} {list(v.shape)}" for k, v in sorted(expected.items()) if k not in header.tensors]
    for name, info in sorted(header.tensors.items()):
        want = expected.get(name)
        if want is None:
            problems.append(f"unexpected tensor {name} (not a parameter of an adapter block of this emulator)")
        elif info.shape != want.shape:
            problems.append(f"{name}: shape {list(info.shape)} != expected {list(want.shape)}")
        elif info.dtype not in _DTYPES:
            problems.append(f"{name}: dtype {info.dtype} not accepted (use F32, F16 or BF16)")
    return [f"{source}: {p}" for p in problems]


def load_checked(path: Path, expected: dict[str, TensorInfo],
                 header: SafetensorsHeader | None = None) -> dict[str, torch.Tensor]:
    """Header-first validation, then load and check every value is finite; raises AdapterError. A caller
    that already parsed the header (for its metadata) passes it, so it is parsed once."""
    header = read_header(path) if header is None else header
    problems = check_header(header, expected, path.name)
    if problems:
        raise AdapterError(problems)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise AdapterError([f"{path.name}: cannot be read as safetensors: {exc}"]) from exc
    bad = [f"{path.name}: {k} has NaN or Inf values" for k, v in sorted(state.items())
           if not torch.isfinite(v).all()]
    if bad:
        raise AdapterError(bad)
    return state


def save_adapter(state: dict[str, torch.Tensor], manifest: EmulatorManifest, out_dir: Path,
                 extra_metadata: dict[str, str] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"format": ADAPTER_FORMAT, "emulator_id": manifest.emulator_id,
                "base_model_sha256": manifest.base_model_sha256,
                "blocks": ",".join(str(i) for i in manifest.adapter_indices()), **(extra_metadata or {})}
    path = out_dir / ADAPTER_FILE
    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp, metadata=metadata)
    return path
