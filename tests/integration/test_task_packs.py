"""Integration: every built-in task pack prepared from the real packages; SmolLM2 zero-shot on one."""

from __future__ import annotations

import json

import pytest

from model_owner_server.base_models import LoadedBase
from shared.assets import AssetError
from shared.data_formats import MCExample, TrainExample
from shared.scoring import continuation_pair, score_multiple_choice
from shared.tasks import TASKS, UnknownTaskError, as_training_examples, load_mc_task, load_task, prepare_task

pytestmark = pytest.mark.real

SPLITS = ("train", "validation", "test")


def _key(example: MCExample | TrainExample) -> str:
    return example.context if isinstance(example, MCExample) else example.target


@pytest.mark.parametrize("name", list(TASKS))
def test_task_pack_is_stable_disjoint_and_sane(name: str) -> None:
    try:
        directory = prepare_task(name)
    except AssetError as exc:
        pytest.skip(f"data package unavailable: {exc}")
    spec = TASKS[name]
    first = load_task(name)
    meta = json.loads((directory / "meta.json").read_text())
    sizes = {split: len(getattr(first, split)) for split in SPLITS}
    assert meta["sizes"] == sizes
    assert 0 < sizes["test"] <= spec.split.max_test and 0 < sizes["validation"] <= spec.split.max_validation
    assert sizes["train"] > sizes["test"]

    prepare_task(name, force=True)  # a fresh preparation gives the same examples in the same order
    second = load_task(name)
    for split in SPLITS:
        assert getattr(second, split) == getattr(first, split), split

    keys = {split: {_key(e) for e in getattr(first, split)} for split in SPLITS}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]

    everything = first.train + first.validation + first.test
    if spec.kind == "multiple_choice":
        assert all(isinstance(e, MCExample) for e in everything)
        mc = [e for e in everything if isinstance(e, MCExample)]
        assert all(len(e.choices) >= 2 and 0 <= e.label < len(e.choices) for e in mc)
        assert all(e.context and e.context == e.context.rstrip() for e in mc)  # scorer adds " " + choice
        assert len({e.label for e in mc}) > 1  # the gold answer is not always in one position
    else:
        assert all(isinstance(e, TrainExample) and e.context == "" and len(e.target) > 200 for e in everything)


def test_unknown_task_lists_the_available_ones() -> None:
    with pytest.raises(UnknownTaskError, match=r"available tasks: .*goal_step_wikihow_goal") as caught:
        prepare_task("goal_step")
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)


def test_training_rows_follow_the_scoring_convention() -> None:
    try:
        data = load_mc_task("strategyqa")
    except AssetError as exc:
        pytest.skip(f"data package unavailable: {exc}")
    rows = as_training_examples(data.train[:20])
    for example, row in zip(data.train[:20], rows, strict=True):
        assert (row.context, row.target) == continuation_pair(example.context, example.choices[example.label])
        assert row.target == " " + example.choices[example.label]


def test_smollm2_is_above_chance_on_goal_inference(smollm2: LoadedBase) -> None:
    try:
        data = load_mc_task("goal_step_wikihow_goal")
    except AssetError as exc:
        pytest.skip(f"data package unavailable: {exc}")
    examples = data.test[:40]
    chance = sum(1 / len(e.choices) for e in examples) / len(examples)
    result = score_multiple_choice(smollm2.model, smollm2.tokenizer, examples, batch_size=32)
    assert result.n == 40
    # measured: acc 0.30, acc_norm 0.475 on these 40 (0.375 / 0.40 on the first 80)
    message = f"acc {result.acc:.3f}, acc_norm {result.acc_norm:.3f}, chance {chance:.3f}"
    assert result.acc > chance and result.acc_norm > chance + 0.1, message
