"""Parameters created on the meta device, for this thread only.

accelerate's `init_empty_weights` swaps `nn.Module.register_parameter` for every thread while it is
active, and restores whatever it found on exit. With two threads (API requests, in-process workers)
that puts another thread's new modules (a harmonizer, a LoRA layer) on meta, and overlapping entries
can leave the patch installed for good. Here the patch is installed once while any thread needs it
and only acts in the threads that asked for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

_local = threading.local()
_lock = threading.Lock()
_users = 0
_original = nn.Module.register_parameter


def _register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    _original(module, name, param)
    if param is None or not getattr(_local, "depth", 0):
        return
    current = module._parameters[name]
    assert current is not None
    extra = dict(current.__dict__)
    hf_flag = extra.pop("_is_hf_initialized", None)
    meta = type(current)(current.to("meta"), requires_grad=param.requires_grad, **extra)
    if hf_flag is not None:
        meta._is_hf_initialized = hf_flag  # type: ignore[attr-defined]
    module._parameters[name] = meta


@contextmanager
def empty_parameters() -> Iterator[None]:
    """Inside: new modules of this thread get parameters on meta (buffers stay real, e.g. rotary tables)."""
    global _users
    with _lock:
        if _users == 0:
            nn.Module.register_parameter = _register  # type: ignore[method-assign,assignment]
        _users += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _lock:
            _users -= 1
            if _users == 0:
                nn.Module.register_parameter = _original  # type: ignore[method-assign]



