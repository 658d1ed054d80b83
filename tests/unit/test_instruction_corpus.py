"""BIG-bench prompt formatting shared by the task packs and stage 1's instruction text (in memory)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.data_formats import MCExample
from shared.instruction_corpus import STAGE1_CORPORA, check_corpus, evaluated_tasks
from shared.tasks.sources import bigbench_examples

TASK: dict[str, Any] = {
    "task_prefix": "Pick one.\n",
    "examples": [
        {"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}},
        {"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}},  # exact duplicate: dropped
        {"input": "free text", "target": "generative"},  # no target_scores: skipped
        {"input": "bad scores", "target_scores": {"a": "yes", "b": 0}},  # not numbers: skipped
        {"input": 7, "target_scores": {"a": 1}},  # input not a string: skipped
        "not an example",
        {"input": "Sky?", "target_scores": {"green": 0, "blue": 1, "red": 1}},  # first maximum wins
    ],
}


def test_bigbench_examples_format_like_json_task_and_skip_what_is_not_multiple_choice() -> None:
    out = bigbench_examples(TASK, {})
    assert [key for key, _ in out] == ["2 + 2?", "Sky?"]
    first, sky = (ex for _, ex in out)
    assert isinstance(first, MCExample) and first.label == 0 and first.choices == ["4", "5"]
    # choices listed in json_task.py's seeded permutation (RandomState(42)), scored in task.json order
    assert first.context == "Pick one.\n\nQ: 2 + 2?\n  choice: 5\n  choice: 4\nA:"
    assert sky.choices[sky.label] == "blue"


def test_overrides_replace_the_prefixes_and_can_drop_the_choice_list() -> None:
    out = bigbench_examples(TASK, {"append_choices_to_input": False, "example_output_prefix": "\nAnswer:",
                                   "member": "ignored"})
    assert out[0][1].context == "Pick one.\n\nQ: 2 + 2?\nAnswer:"


def test_no_task_the_project_evaluates_is_stage1_text() -> None:
    assert {"intent_recognition", "goal_step_wikihow", "winowhy", "social_iqa", "strategyqa"} <= evaluated_tasks()
    assert all("/" not in name for name in evaluated_tasks())


def test_check_corpus_names_the_option_it_was_given() -> None:
    assert [check_corpus(c) for c in STAGE1_CORPORA] == list(STAGE1_CORPORA)
    with pytest.raises(ValueError) as exc:
        check_corpus("pile", "--corpus")
    assert str(exc.value) == "--corpus must be one of calibration, calibration+instructions, got 'pile'"
    with pytest.raises(ValueError, match=r"^stage-1 corpus must be one of"):
        check_corpus("Calibration")
