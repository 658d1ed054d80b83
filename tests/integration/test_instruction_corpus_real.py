"""Integration: stage 1's instruction text from the real BIG-bench sdist never holds an evaluated task."""

from __future__ import annotations

import pytest

from shared.assets import AssetError
from shared.corpora import calibration_split
from shared.instruction_corpus import PER_TASK, instruction_texts, stage1_texts
from shared.tasks import TASKS, load_mc_task

pytestmark = pytest.mark.real


def test_instruction_text_is_public_prompts_with_answers_and_no_evaluated_task() -> None:
    try:
        texts = instruction_texts()
    except AssetError as exc:
        pytest.skip(f"data package unavailable: {exc}")
    assert len(texts) > 50 * PER_TASK and len(set(texts)) > 0.95 * len(texts)
    assert sum("choice: " in t for t in texts) > len(texts) // 4  # many list their choices, as intent does
    evaluated = [e.context for name, spec in TASKS.items() if spec.source.type == "bigbench"
                 for e in load_mc_task(name).test[:20]]
    assert not any(context in text for context in evaluated for text in texts[::7])
    assert not any("Predict the intent of the utterance" in t for t in texts)

    mixed = stage1_texts("calibration+instructions")
    assert mixed is not None and sorted(mixed) == sorted([*calibration_split()[0], *texts])
    assert mixed == stage1_texts("calibration+instructions")  # a stable order: a stable profile id
    assert stage1_texts("calibration") is None
    with pytest.raises(ValueError, match=r"stage-1 corpus must be one of calibration, .*got 'pile'"):
        stage1_texts("pile")
