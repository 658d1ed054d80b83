"""The real SmolLM2-135M for the integration tests (loaded once per module: some tests change it)."""

from __future__ import annotations

import pytest

from model_owner_server.base_models import BaseModelError, LoadedBase, load_base_model


@pytest.fixture(scope="module")
def smollm2() -> LoadedBase:
    try:
        return load_base_model("smollm2-135m")
    except BaseModelError as exc:
        pytest.skip(f"SmolLM2 cannot be prepared here: {exc}")
