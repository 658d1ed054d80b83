"""Shared helpers for unit tests on tiny models."""

from __future__ import annotations

from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.emulators.profile import ImportanceProfile, Stage1Config
from model_owner_server.emulators.stage1 import run_stage1

TEXTS = [
    f"Document {i}. " + "The quick brown fox jumps over the lazy dog; pack my box with jugs. " * 30 for i in range(12)
]


def tiny_config(**overrides: object) -> Stage1Config:
    values: dict[str, object] = {
        "steps": 4,
        "batch_size": 2,
        "seq_len": 32,
        "harmonizer_rank": 8,
        "adapter_bottom": 1,
        "adapter_top": 1,
        "checkpoint_every": 2,
        "fit_sequences": 8,  # a short per-block regression keeps the tiny runs fast
        "fit_steps": 20,
    }
    values.update(overrides)
    return Stage1Config.model_validate(values)


def tiny_profile(name: str = "tiny-llama", **overrides: object) -> tuple[LoadedBase, ImportanceProfile]:
    base = load_base_model(name)
    return base, run_stage1(base, tiny_config(**overrides), texts=TEXTS)
