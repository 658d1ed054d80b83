"""An adapter's own tensors on the serving device, and the memory-budgeted pool that holds them.

A full-block adapter is kept as overrides of its blocks' parameters (nothing else is copied); a LoRA
adapter as its unmerged A/B pairs and scale. Both are keyed by the leaf module they change (the path of
that module in the base model), which is how `routed.RoutedLeaf` finds them.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

LORA_PREFIX = "base_model.model."


class CheckedLike(Protocol):
    """What `adapter_checks.validate` returns (kept structural so serving does not import the checks)."""

    kind: Literal["full", "lora"]
    state: dict[str, torch.Tensor]
    lora_config: dict[str, object] | None


@dataclass(frozen=True)
class LoraPair:
    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scale: float


@dataclass
class LoadedAdapter:
    key: str
    kind: Literal["full", "lora"]
    full: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # leaf path -> {param name: tensor}
    lora: dict[str, LoraPair] = field(default_factory=dict)  # leaf path -> its pair
    nbytes: int = 0


def _split(name: str) -> tuple[str, str]:
    leaf, _, param = name.rpartition(".")
    return leaf, param


def load_adapter(key: str, checked: CheckedLike, leaves: Mapping[str, torch.nn.Module],
                 device: torch.device, dtype: torch.dtype) -> LoadedAdapter:
    """The adapter's tensors, cast to the base's dtype (as `load_state_dict` into the plugged copy does)
    and moved to the serving device. `leaves`: the routed leaf modules by path; a key outside them is
    refused (it would change a tensor shared by every row)."""
    loaded = LoadedAdapter(key, checked.kind)
    if checked.kind == "full":
        for name, tensor in checked.state.items():
            leaf, param = _split(name)
            if leaf not in leaves:
                raise ValueError(f"{name}: not a parameter of a block leaf the server can route")
            loaded.full.setdefault(leaf, {})[param] = tensor.to(device=device, dtype=dtype)
    else:
        config = checked.lora_config or {}
        rank, alpha = config.get("r"), config.get("lora_alpha")
        assert isinstance(rank, int) and isinstance(alpha, int | float)  # validate() checked the config
        # PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA
        scale = float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in checked.state.items():
            stem = name.removeprefix(LORA_PREFIX)
            for part in ("lora_A", "lora_B"):
                suffix = f".{part}.weight"
                if stem.endswith(suffix):
                    pairs.setdefault(stem.removesuffix(suffix), {})[part] = tensor.to(device=device, dtype=dtype)
        for leaf, pair in pairs.items():
            if leaf not in leaves or set(pair) != {"lora_A", "lora_B"}:
                raise ValueError(f"{leaf}: not a LoRA pair on a block leaf the server can route")
            loaded.lora[leaf] = LoraPair(pair["lora_A"], pair["lora_B"], scale)
    tensors = [t for params in loaded.full.values() for t in params.values()]
    tensors += [t for pair in loaded.lora.values() for t in (pair.a, pair.b)]
    loaded.nbytes = sum(t.numel() * t.element_size() for t in tensors)
    return loaded


class AdapterPool:
    """Adapters loaded on first use, evicted least recently used once their bytes pass `budget_bytes`.

    An adapter in use by a queued or running request is pinned and never evicted (its request would lose
    its weights mid-generation); the pool may then hold more than the budget until those requests end.
    A key is built once even when many requests ask for it at the same time."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[str, LoadedAdapter] = OrderedDict()
        self._pins: dict[str, int] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.loads = 0
        self.evictions = 0

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return sum(a.nbytes for a in self._items.values())

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def acquire(self, key: str, build: Callable[[], LoadedAdapter]) -> tuple[LoadedAdapter, bool]:
        """(the adapter, pinned until `release`; whether it was already loaded)."""
        with self._lock:
            found = self._pin_if_present(key)
            if found is not None:
                return found, True
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._pin_if_present(key)
                if found is not None:
                    return found, True
            loaded = build()  # outside the pool lock: reading and checking the files takes a while
            with self._lock:
                self._items[key] = loaded
                self._pins[key] = self._pins.get(key, 0) + 1
                self.loads += 1
                self._key_locks.pop(key, None)
                self._evict()
            return loaded, False

    def _pin_if_present(self, key: str) -> LoadedAdapter | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            self._pins[key] = self._pins.get(key, 0) + 1
        return found

    def release(self, key: str) -> None:
        with self._lock:
            left = self._pins.get(key, 0) - 1
            if left > 0:
                self._pins[key] = left
            else:
                self._pins.pop(key, None)
            self._evict()

    def discard(self, key: str) -> None:
        """Forget an adapter (deleted, or replaced); a running request keeps its own reference."""
        with self._lock:
            self._items.pop(key, None)

    def _evict(self) -> None:
        held = sum(a.nbytes for a in self._items.values())
        for key in list(self._items):  # oldest first
            if held <= self.budget_bytes:
                break
            if self._pins.get(key):
                continue
            held -= self._items.pop(key).nbytes
            self.evictions += 1
