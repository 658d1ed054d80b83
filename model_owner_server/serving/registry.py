"""What one API process serves: per base model one routed copy, one engine and one scheduler thread,
and one adapter pool (one memory budget) for all of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from model_owner_server.base_models import LoadedBase
from model_owner_server.serving.adapters import AdapterPool, CheckedLike, LoadedAdapter, load_adapter
from model_owner_server.serving.engine import Engine, mergeable
from model_owner_server.serving.routed import Router, routed_copy
from model_owner_server.serving.scheduler import GenRequest, Scheduler
from model_owner_server.serving.sinks import Sink
from shared.training_batches import pad_token_id


def resolve_device(name: str) -> torch.device:
    """`auto`: the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def eos_ids(model: PreTrainedModel) -> frozenset[int]:
    """The ids that end a sequence, as `generate` reads them (generation config, else model config)."""
    value = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if value is None:
        value = getattr(model.config, "eos_token_id", None)
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, int) else value)


@dataclass
class ServedModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    router: Router
    leaves: dict[str, nn.Module]
    engine: Engine
    scheduler: Scheduler
    eos: frozenset[int]
    dtype: torch.dtype


class Serving:
    def __init__(self, load_base: Callable[[str], LoadedBase], device: str, max_adapter_mb: float, max_batch: int,
                 queue_limit: int, retry_after_s: int) -> None:
        self.load_base = load_base
        self.device = resolve_device(device)
        self.pool = AdapterPool(int(max_adapter_mb * 1024 * 1024))
        self.max_batch = max_batch
        self.queue_limit = queue_limit
        self.retry_after_s = retry_after_s
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    def served(self, name: str) -> ServedModel:
        with self._lock:
            found = self._models.get(name)
            if found is None:
                found = self._models[name] = self._build(name)
            return found

    def _build(self, name: str) -> ServedModel:
        base = self.load_base(name)
        model, router, leaves = routed_copy(base.model, self.device)
        engine = Engine(model, router, pad_token_id(base.tokenizer))
        # a model with sliding-window layers cannot merge padded caches: it is served one request at a time
        batch = self.max_batch if mergeable(DynamicCache(config=model.config)) else 1
        scheduler = Scheduler(engine, batch, self.queue_limit, self.retry_after_s, name)
        dtype = next(model.parameters()).dtype
        return ServedModel(name, model, base.tokenizer, router, leaves, engine, scheduler, eos_ids(model), dtype)

    def acquire_adapter(self, name: str, key: str, check: Callable[[], CheckedLike]) -> tuple[LoadedAdapter, bool]:
        """The adapter `key` of base model `name`, pinned until `release`; (it, whether it was loaded already).
        `check` reads and validates its stored files (only on a miss)."""
        served = self.served(name)
        return self.pool.acquire(key, lambda: load_adapter(key, check(), served.leaves, self.device, served.dtype))

    def release(self, key: str) -> None:
        self.pool.release(key)

    def request(self, name: str, prompt: list[int], adapter: LoadedAdapter | None, max_new: int, sink: Sink,
                temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> GenRequest:
        """A request for model `name` (not yet submitted); a pinned adapter is released when it finishes."""
        served = self.served(name)
        key = adapter.key if adapter is not None else None
        return GenRequest(prompt, adapter, max_new, sink, served.eos, temperature, top_p, seed,
                          on_finish=(lambda: self.release(key)) if key is not None else None)

    def submit(self, name: str, request: GenRequest) -> None:
        """Queue it (QueueFull when the queue is full; the caller then releases what it pinned)."""
        self.served(name).scheduler.submit(request)

    def close(self) -> None:
        with self._lock:
            models = list(self._models.values())
        for served in models:
            served.scheduler.close()
