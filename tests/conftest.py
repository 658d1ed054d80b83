"""Test isolation: every test gets its own cache directory, sharing only downloaded packages/models."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from shared.cache import cache_dir

# Served models in tests: the real one and the tiny random ones (the default serves only the real one).
TEST_MODELS = json.dumps(["smollm2-135m", "tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-opt"])
REAL_CACHE = cache_dir()  # the developer's / CI's cache, resolved before any test changes the env

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SCALEOT_CACHE_DIR per test; package archives and prepared models are linked in."""
    root = tmp_path_factory.mktemp("cache")
    for shared_dir in ("packages", "models"):
        source = REAL_CACHE / shared_dir
        source.mkdir(parents=True, exist_ok=True)
        (root / shared_dir).symlink_to(source, target_is_directory=True)
    monkeypatch.setenv("SCALEOT_CACHE_DIR", str(root))
    monkeypatch.setenv("SCALEOT_MODELS", TEST_MODELS)  # the tiny models are served only when named
    yield root
