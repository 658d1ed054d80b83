"""The paper-table benchmark on tiny-llama with synthetic tasks: lr selection on validation only,
resumability, the summary JSON, and the statistics wired to the stored per-item correctness."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks.offsite_tuning import paper_table, task_run, tuning_select
from benchmarks.offsite_tuning.records import Cell, TaskResult, VariantRow
from benchmarks.offsite_tuning.run_state import StateMismatchError
from benchmarks.offsite_tuning.task_run import Variant
from benchmarks.reports import paper_report
from benchmarks.reports.summary import summarize
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.evaluation.matrix import Score
from shared.cache import cache_dir
from shared.data_formats import MCExample
from shared.tasks import TaskData
from tests.unit.bench_helpers import toy_budget, toy_task
from tests.unit.helpers import tiny_profile

VARIANTS = [Variant("uniform", 0.0, 0.5), Variant("scaleot", 0.5, 0.5)]


@pytest.fixture(scope="module")
def tiny() -> tuple[LoadedBase, ImportanceProfile]:
    return tiny_profile()


def test_pick_best_prefers_accuracy_then_the_smaller_rate() -> None:
    assert tuning_select.pick_best({1e-4: 0.5, 3e-4: 0.7, 1e-3: 0.6}) == 3e-4
    assert tuning_select.pick_best({1e-3: 0.7, 1e-4: 0.7}) == 1e-4
    with pytest.raises(ValueError):
        tuning_select.pick_best({})


def test_lr_selection_scores_the_validation_split_only(tiny: tuple[LoadedBase, ImportanceProfile],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    base, profile = tiny
    data = toy_task()
    scored: list[list[MCExample]] = []
    good_lr = 1e-2

    def spy(model: Any, tokenizer: Any, examples: list[MCExample], **_: Any) -> Score:
        scored.append(list(examples))
        # fake accuracy: the lr is recovered from the model's tuned weights being different, so score by call order
        return Score(metric="acc", value=0.9 if len(scored) % 2 == 0 else 0.1, n=len(examples))

    monkeypatch.setattr(tuning_select, "score_model", spy)
    budget = toy_budget(lr_grid=(1e-3, good_lr), full_lr_grid=(1e-4, 1e-3))
    train, validation, test = task_run.split(data, budget)
    choices = tuning_select.select_task_lrs(base.model, base.tokenizer, task_run.adapter_blocks(base, profile), train,
                                            validation, task_run.tuning_for(budget, 1e-3, 0), budget.grids)
    assert len(scored) == 4  # two rates x two kinds, nothing else
    assert all(examples == validation for examples in scored)
    assert not any(e in test for examples in scored for e in examples)
    assert choices["adapter"].lr == good_lr and choices["adapter"].validation_acc == {"0.001": 0.1, "0.01": 0.9}
    assert choices["full_parameter"].lr == 1e-3


def _cell(*seeds: str) -> Cell:
    return Cell(acc=[s.count("1") / len(s) for s in seeds], correct=list(seeds))


def _task(name: str, plug: tuple[str, str], emu_ft: tuple[str, str], upper: tuple[str, str]) -> TaskResult:
    def row(method: str, beta: float, plug_in: tuple[str, str]) -> VariantRow:
        return VariantRow(variant=Variant(method, beta).label, method=method, alpha=0.5, beta=beta, emulator_id="e",
                          fidelity={"perplexity": 100.0 if method == "scaleot" else 900.0, "kd_error": 0.5,
                                    "grad_cosine": {"0": 0.5, "3": 0.9}},
                          emulator_zero_shot=_cell("0000"), emulator_fine_tuned=_cell(*emu_ft),
                          plug_in=_cell(*plug_in))

    return TaskResult(task=name, chance=0.25, n_train=8, n_valid=4, n_test=4, seeds=[0, 1], lr={},
                      full_zero_shot=_cell("0000"), adapter_tuning_full_model=_cell(*upper),
                      full_parameter_fine_tuning=_cell("1111", "1111"),
                      rows=[row("uniform", 0.0, ("1000", "1000")), row("scaleot", 0.0, plug)])


def test_summary_has_the_promised_shape_and_known_means() -> None:
    tasks = [_task("a", plug=("1100", "1100"), emu_ft=("1000", "1000"), upper=("1110", "1110")),
             _task("b", plug=("1111", "1110"), emu_ft=("0000", "0000"), upper=("1111", "1111"))]
    summary = summarize(tasks, n_boot=200)
    assert [s["variant"] for s in summary] == [VARIANTS[0].label, Variant("scaleot", 0.0).label]
    scaleot = summary[1]
    assert {"variant", "method", "alpha", "beta", "utility_gap", "privacy_gap", "plug_in", "emulator_ppl"} <= set(
        scaleot)
    for gap in ("utility_gap", "privacy_gap"):
        assert set(scaleot[gap]) == {"mean", "ci95"} and len(scaleot[gap]["ci95"]) == 2
        assert scaleot[gap]["ci95"][0] <= scaleot[gap]["mean"] <= scaleot[gap]["ci95"][1]
    assert set(scaleot["plug_in"]) == {"mean"}
    # task a: privacy 25, utility 25; task b: privacy 87.5, utility 12.5 -> means 56.25 and 18.75 points
    assert scaleot["privacy_gap"]["mean"] == pytest.approx(56.25)
    assert scaleot["utility_gap"]["mean"] == pytest.approx(18.75)
    assert scaleot["plug_in"]["mean"] == pytest.approx((50 + 87.5) / 2)
    assert scaleot["plug_in_vs_uniform"]["mean"] == pytest.approx((25 + 62.5) / 2)
    assert scaleot["emulator_ppl"] == 100.0 and scaleot["grad_cosine"] == {"0": 0.5, "3": 0.9}
    assert summary[0]["plug_in_vs_uniform"] is None
    json.dumps(summary)  # plain JSON


def _run(tiny: tuple[LoadedBase, ImportanceProfile], out: Path, tasks: list[str], **kwargs: Any) -> dict[str, Any]:
    base, profile = tiny
    return paper_table.run(base, profile, tasks, VARIANTS, kwargs.pop("budget", toy_budget()), out, "t",
                           log=lambda _: None, **kwargs)


def _count_tasks_run(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the tasks `paper_table.run` runs from now on (finished ones it skips are not in it)."""
    ran: list[str] = []
    real_run_task = paper_table.run_task

    def counting(base: LoadedBase, profile: ImportanceProfile, data: TaskData[MCExample], *args: Any,
                 **kwargs: Any) -> TaskResult:
        ran.append(data.spec.name)
        return real_run_task(base, profile, data, *args, **kwargs)

    monkeypatch.setattr(paper_table, "run_task", counting)
    return ran


def test_run_writes_results_and_resumes_task_by_task(tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []

    def interrupted(name: str) -> TaskData[MCExample]:
        loaded.append(name)
        if name == "b":
            raise KeyboardInterrupt  # the machine goes away during the second task
        return toy_task(name)

    with pytest.raises(KeyboardInterrupt):
        _run(tiny, tmp_path, ["a", "b"], load_task=interrupted)
    first = json.loads((tmp_path / "paper-table-t.json").read_text())
    assert [t["task"] for t in first["tasks"]] == ["a"]

    ran = _count_tasks_run(monkeypatch)
    result = _run(tiny, tmp_path, ["a", "b"], load_task=lambda name: toy_task(name))
    assert ran == ["b"]  # a finished in the first run and is not run again
    assert [t["task"] for t in result["tasks"]] == ["a", "b"]
    assert result["tasks"][0] == first["tasks"][0]
    on_disk = json.loads((tmp_path / "paper-table-t.json").read_text())
    assert on_disk["summary"] == result["summary"]
    for entry in result["summary"]:
        assert entry["n_tasks"] == 2 and len(entry["privacy_gap"]["ci95"]) == 2
    task = result["tasks"][0]
    assert len(task["adapter_tuning_full_model"]["correct"]) == 2  # one per seed
    assert len(task["rows"][0]["plug_in"]["correct"][0]) == task["n_test"]
    assert set(task["lr"]) == {"adapter", "full_parameter"}
    assert (tmp_path / "paper-table-t.md").read_text().count("adapter-only tuning on the full model") >= 1
    assert (tmp_path / "paper-table-t.png").stat().st_size > 0

    ran.clear()
    _run(tiny, tmp_path, ["a", "b"], load_task=lambda name: toy_task(name))
    assert ran == []  # everything finished: nothing to do


def test_a_task_swapped_out_is_kept_and_a_new_one_runs_alone(tiny: tuple[LoadedBase, ImportanceProfile],
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing one task of a finished run (another --tasks) runs only the new task; the old one stays in
    the state, out of the report, and comes back without running when it is listed again."""
    budget = toy_budget(seeds=(0,), lr_grid=(1e-2,), full_lr_grid=())
    _run(tiny, tmp_path, ["a", "b"], budget=budget, load_task=lambda name: toy_task(name))
    ran = _count_tasks_run(monkeypatch)
    swapped = _run(tiny, tmp_path, ["a", "c"], budget=budget, load_task=lambda name: toy_task(name))
    assert ran == ["c"]
    assert [t["task"] for t in swapped["tasks"]] == ["a", "c"]
    assert all(entry["n_tasks"] == 2 for entry in swapped["summary"])
    state = json.loads(paper_table.state_path(tmp_path, "t").read_text())
    assert set(state["tasks"]) == {"a", "b", "c"}
    back = _run(tiny, tmp_path, ["c", "b"], budget=budget, load_task=lambda name: toy_task(name))
    assert ran == ["c"]  # b was kept: nothing ran again
    assert [t["task"] for t in back["tasks"]] == ["c", "b"]


def test_a_changed_configuration_does_not_mix_with_saved_results(tiny: tuple[LoadedBase, ImportanceProfile],
                                                                 tmp_path: Path) -> None:
    budget = toy_budget(seeds=(0,), lr_grid=(1e-2,), full_lr_grid=())
    _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    with pytest.raises(StateMismatchError):
        _run(tiny, tmp_path, ["a"], budget=replace(budget, n_train=4), load_task=lambda name: toy_task(name))
    result = _run(tiny, tmp_path, ["a"], budget=replace(budget, n_train=4), restart=True,
                  load_task=lambda name: toy_task(name))
    assert result["tasks"][0]["n_train"] == 4
    assert result["tasks"][0]["full_parameter_fine_tuning"]["acc"] == []  # no full-parameter grid: no row
    assert result["summary"][0]["utility_gap_full_parameter"] is None


def test_quick_shaped_run_is_fast(tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path) -> None:
    """The QUICK budget's shape (two seeds, a 2-rate grid, full-parameter row) end to end on tiny-llama
    (about 8 s on an idle 2-core CPU; wall time is not asserted, the machine may be shared)."""
    quick = replace(paper_table.QUICK, n_train=8, n_valid=4, n_test=6, fidelity_batches=0,
                    tuning=paper_table.QUICK.tuning.model_copy(update={"max_len": 32}))
    result = _run(tiny, tmp_path, ["goal_step_wikihow_goal"], budget=quick, load_task=lambda name: toy_task(name))
    assert len(result["summary"]) == len(VARIANTS)
    assert result["tasks"][0]["seeds"] == list(paper_table.QUICK.seeds)


def test_a_finished_task_reruns_only_the_rows_whose_emulator_changed(
        tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = toy_budget(seeds=(0,), lr_grid=(1e-2,), full_lr_grid=())
    first = _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    state_file = paper_table.state_path(tmp_path, "t")
    state = json.loads(state_file.read_text())
    state["tasks"]["a"]["rows"][1]["emulator_id"] = "emu-built-by-older-code"
    state_file.write_text(json.dumps(state))

    ran_tasks: list[str] = []
    reran: list[str] = []
    real_rerun = paper_table.rerun_variant
    monkeypatch.setattr(paper_table, "run_task", lambda *a, **k: ran_tasks.append("x"))

    def counting_rerun(*args: Any, **kwargs: Any) -> VariantRow:
        reran.append(args[4].label)
        return real_rerun(*args, **kwargs)

    monkeypatch.setattr(paper_table, "rerun_variant", counting_rerun)
    result = _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    assert ran_tasks == [] and reran == [VARIANTS[1].label]
    base, profile = tiny
    rows = result["tasks"][0]["rows"]
    assert rows[1]["emulator_id"] == task_run.expected_emulator_id(base, profile, VARIANTS[1])
    assert rows[0] == first["tasks"][0]["rows"][0]  # the current row is kept as it was
    for key in ("full_zero_shot", "adapter_tuning_full_model", "lr", "n_test"):
        assert result["tasks"][0][key] == first["tasks"][0][key]
    assert len(rows[1]["plug_in"]["correct"][0]) == result["tasks"][0]["n_test"]
    reran.clear()
    _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    assert reran == []  # refreshed once, then current


def test_a_variant_added_later_runs_on_finished_tasks_and_one_left_out_is_kept(
        tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model_owner_server.emulators.distill as distill

    fast = distill.DistillSettings(steps=4, batch_size=2, seq_len=32, check_sequences=2)
    monkeypatch.setattr(distill, "DistillSettings", lambda: fast)  # the default settings, made small
    budget = toy_budget(seeds=(0,), lr_grid=(1e-2,), full_lr_grid=())
    load = lambda name: toy_task(name)  # noqa: E731
    first = _run(tiny, tmp_path, ["a"], budget=budget, load_task=load)
    reran: list[str] = []
    real_rerun = paper_table.rerun_variant

    def counting_rerun(*args: Any, **kwargs: Any) -> VariantRow:
        reran.append(args[4].label)
        return real_rerun(*args, **kwargs)

    monkeypatch.setattr(paper_table, "rerun_variant", counting_rerun)
    monkeypatch.setattr(paper_table, "run_task", lambda *a, **k: pytest.fail("a finished task is not run again"))
    ot_kd = Variant("ot-kd", 0.0, 0.5)
    base, profile = tiny
    with_ot = paper_table.run(base, profile, ["a"], [VARIANTS[0], ot_kd, VARIANTS[1]], budget, tmp_path, "t",
                              load_task=load, log=lambda _: None)
    assert reran == [ot_kd.label]
    rows = with_ot["tasks"][0]["rows"]
    assert [r["variant"] for r in rows] == [VARIANTS[0].label, ot_kd.label, VARIANTS[1].label]
    assert rows[0] == first["tasks"][0]["rows"][0] and rows[2] == first["tasks"][0]["rows"][1]
    assert rows[1]["method"] == "ot-kd" and rows[1]["emulator_id"] != rows[0]["emulator_id"]
    assert [s["variant"] for s in with_ot["summary"]] == [r["variant"] for r in rows]
    assert with_ot["summary"][1]["plug_in_vs_uniform"] is not None  # compared with uniform at its alpha
    assert (cache_dir() / "bench-emulators" / rows[1]["emulator_id"] / "manifest.json").is_file()

    reran.clear()
    without = _run(tiny, tmp_path, ["a"], budget=budget, load_task=load)  # the first command again
    assert reran == [] and [r["variant"] for r in without["tasks"][0]["rows"]] == [v.label for v in VARIANTS]
    again = paper_table.run(base, profile, ["a"], [VARIANTS[0], ot_kd, VARIANTS[1]], budget, tmp_path, "t",
                            load_task=load, log=lambda _: None)
    assert reran == []  # the set-aside row comes back without a re-run
    assert again["tasks"][0]["rows"][1] == rows[1]



def test_a_task_stopped_after_a_variant_row_resumes_inside_the_task(
        tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = toy_budget(seeds=(0,), lr_grid=(1e-2,), full_lr_grid=())
    real_row, real_references = task_run._variant_row, task_run._reference_rows
    references: list[str] = []
    rows: list[str] = []
    stopped: list[bool] = []

    def counted_references(*args: Any, **kwargs: Any) -> Any:
        references.append("ran")
        return real_references(*args, **kwargs)

    def stopping_row(base: LoadedBase, profile: ImportanceProfile, variant: Variant, *args: Any) -> VariantRow:
        if variant.label == VARIANTS[1].label and not stopped:
            stopped.append(True)
            raise KeyboardInterrupt  # the machine goes away after the first variant row
        rows.append(variant.label)
        return real_row(base, profile, variant, *args)

    monkeypatch.setattr(task_run, "_reference_rows", counted_references)
    monkeypatch.setattr(task_run, "_variant_row", stopping_row)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    state = json.loads((tmp_path / ".paper-table-t.state.json").read_text())
    assert state["tasks"] == {} and [r["variant"] for r in state["partial"]["a"]["rows"]] == [VARIANTS[0].label]
    assert references == ["ran"] and rows == [VARIANTS[0].label]

    result = _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    assert references == ["ran"]  # the reference rows are not run again
    assert rows == [VARIANTS[0].label, VARIANTS[1].label]  # only the missing variant row ran
    assert [r["variant"] for r in result["tasks"][0]["rows"]] == [v.label for v in VARIANTS]
    assert json.loads((tmp_path / ".paper-table-t.state.json").read_text())["partial"] == {}


def test_another_adapter_split_is_the_profile_s(tmp_path: Path) -> None:
    """`--adapter 1,3`: the reference rows tune the first block and the last three, and the emulators are
    built with the same split (from the profile's stage-1 config)."""
    base, profile = tiny_profile(adapter_bottom=1, adapter_top=3)
    assert task_run.adapter_blocks(base, profile) == [0, base.num_layers - 3, base.num_layers - 2,
                                                      base.num_layers - 1]
    spec = task_run.variant_spec(base, profile, Variant("scaleot", 0.0, 0.5))
    assert (spec.adapter_bottom, spec.adapter_top) == (1, 3)
    result = paper_table.run(base, profile, ["goal_step_wikihow_goal"], VARIANTS, toy_budget(), tmp_path, "s",
                             log=lambda _: None, load_task=lambda name: toy_task(name))
    assert [row["variant"] for row in result["summary"]] == [v.label for v in VARIANTS]
    assert result["adapter"] == {"bottom": 1, "top": 3}
    assert "(adapter 1 + 3 blocks)" in (tmp_path / "paper-table-s.md").read_text()


def test_a_learning_rate_selection_stopped_midway_keeps_the_rates_it_scored(
        tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = toy_budget(seeds=(0,), lr_grid=(1e-3, 1e-2), full_lr_grid=())
    real_score = tuning_select.score_model
    scored: list[str] = []

    def stopping_score(model: Any, tokenizer: Any, items: Any) -> Score:
        if len(scored) == 1 and not getattr(stopping_score, "stopped", False):
            stopping_score.stopped = True  # type: ignore[attr-defined]
            raise KeyboardInterrupt  # the machine goes away during the second rate
        scored.append("rate")
        return real_score(model, tokenizer, items)

    monkeypatch.setattr(tuning_select, "score_model", stopping_score)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    state = json.loads((tmp_path / ".paper-table-t.state.json").read_text())
    assert list(state["lr_scores"]["a"]["adapter"]) == ["0.001"] and state["lrs"] == {}

    logged: list[str] = []
    result = paper_table.run(tiny[0], tiny[1], ["a"], VARIANTS, budget, tmp_path, "t", log=logged.append,
                             load_task=lambda name: toy_task(name))
    assert scored == ["rate", "rate"]  # only the second rate ran on resuming
    assert any("lr 0.001: validation acc" in line and "earlier run" in line for line in logged)
    assert set(result["tasks"][0]["lr"]["adapter"]["validation_acc"]) == {"0.001", "0.01"}
    assert json.loads((tmp_path / ".paper-table-t.state.json").read_text())["lr_scores"] == {}


def test_reference_rows_stopped_midway_keep_the_seeds_they_finished(
        tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = toy_budget(seeds=(0, 1), lr_grid=(1e-2,), full_lr_grid=())
    real_tuned = task_run.tuned_copy
    tuned: list[int] = []

    def stopping_tuned(*args: Any) -> Any:
        if len(tuned) == 1 and not getattr(stopping_tuned, "stopped", False):
            stopping_tuned.stopped = True  # type: ignore[attr-defined]
            raise KeyboardInterrupt  # the machine goes away during the second seed's tuning
        tuned.append(args[-1].seed)
        return real_tuned(*args)

    monkeypatch.setattr(task_run, "tuned_copy", stopping_tuned)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    state = json.loads((tmp_path / ".paper-table-t.state.json").read_text())
    kept = state["reference_cells"]["a"]["adapter_tuning_full_model"]
    assert len(kept["acc"]) == 1 and state["partial"] == {}

    logged: list[str] = []
    result = paper_table.run(tiny[0], tiny[1], ["a"], VARIANTS, budget, tmp_path, "t", log=logged.append,
                             load_task=lambda name: toy_task(name))
    assert tuned == [0, 1]  # seed 0 was not tuned again
    assert any("adapter_tuning_full_model seed 0" in line and "earlier run" in line for line in logged)
    cell = result["tasks"][0]["adapter_tuning_full_model"]
    assert cell["acc"][0] == kept["acc"][0] and cell["correct"][0] == kept["correct"][0] and len(cell["acc"]) == 2
    assert json.loads((tmp_path / ".paper-table-t.state.json").read_text())["reference_cells"] == {}


def test_the_task_rule_is_reported_from_the_validation_split_only() -> None:
    """The report says whether the full model learned each task: the chosen adapter rate's validation
    accuracy against the validation majority position, in standard errors; no test item is involved."""
    items = [MCExample(context=f"q{i}", choices=["x", "y"], label=int(i < 13)) for i in range(20)]
    assert task_run.majority_share(items) == pytest.approx(0.65)
    assert task_run.majority_share([]) is None

    def task(acc: float, majority: float | None) -> dict[str, Any]:
        choice = {"kind": "adapter", "lr": 1e-4, "validation_acc": {"0.0001": acc, "0.001": 0.99}, "n_valid": 200,
                  "seed": 0}
        return {"task": "t", "lr": {"adapter": choice}, "validation_majority": majority}

    # winowhy's own numbers: 61.0 at the chosen rate against a majority of 52.0 on 200 items: 2.6 SE
    winowhy = paper_report.learned_margin(task(0.61, 0.52))
    assert winowhy == pytest.approx(0.09 / (0.61 * 0.39 / 200) ** 0.5)
    assert winowhy is not None and winowhy < paper_report.LEARNED_MIN_SE  # the chosen rate's score, not 0.99
    learned = paper_report.learned_margin(task(0.9, 0.2))
    assert learned is not None and learned > paper_report.LEARNED_MIN_SE
    assert paper_report.learned_margin(task(0.9, None)) is None  # a state from before the majority was kept
    table = "\n".join(paper_report._lr_table({"tasks": [task(0.61, 0.52)]}))
    assert "52.0" in table and "NOT learned" in table


def test_a_state_without_the_validation_majority_gets_it_on_resume(tiny: tuple[LoadedBase, ImportanceProfile],
                                                                   tmp_path: Path) -> None:
    budget = toy_budget(seeds=(0,), lr_grid=(1e-2,), full_lr_grid=())
    first = _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    expected = task_run.majority_share(toy_task("a").validation[: budget.n_valid])
    assert first["tasks"][0]["validation_majority"] == pytest.approx(expected)
    path = paper_table.state_path(tmp_path, "t")
    state = json.loads(path.read_text())
    del state["tasks"]["a"]["validation_majority"]  # as written before the field existed
    path.write_text(json.dumps(state))
    again = _run(tiny, tmp_path, ["a"], budget=budget, load_task=lambda name: toy_task(name))
    assert again["tasks"][0]["validation_majority"] == pytest.approx(expected)
    assert json.loads(path.read_text())["tasks"]["a"]["validation_majority"] == pytest.approx(expected)


def test_a_variant_on_fewer_tasks_says_so_in_the_summary() -> None:
    tasks = [_task("a", plug=("1100", "1100"), emu_ft=("1000", "1000"), upper=("1110", "1110")),
             _task("b", plug=("1111", "1110"), emu_ft=("0000", "0000"), upper=("1111", "1111"))]
    tasks[1].rows = tasks[1].rows[:1]  # scaleot has reached task a only (added to the run midway)
    summary = summarize(tasks, n_boot=50)
    lines = paper_report._summary_table({"summary": summary, "tasks": [t.model_dump() for t in tasks]})
    assert any(line.startswith(f"| {VARIANTS[0].label} |") for line in lines)
    assert any(line.startswith(f"| {Variant('scaleot', 0.0).label} (1 of 2 tasks) |") for line in lines)


def test_a_calibrated_row_starts_from_committed_results_and_is_paired_with_its_uncalibrated_row(
        tiny: tuple[LoadedBase, ImportanceProfile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--from-results`: a committed run's rows are taken as they are, only the task-calibrated variant
    runs, and the report gives calibrated - uncalibrated with paired CIs (the privacy cost)."""
    from model_owner_server.emulators.task_calibration import CalibrationSettings

    monkeypatch.setattr(task_run, "CalibrationSettings", lambda: CalibrationSettings(steps=3, batch_size=2, max_len=32))
    budget = toy_budget(seeds=(0,), lr_grid=(1e-2,), full_lr_grid=())
    load = lambda name: toy_task(name)  # noqa: E731
    committed = _run(tiny, tmp_path, ["a"], budget=budget, load_task=load)
    source = tmp_path / "paper-table-t.json"
    monkeypatch.setattr(paper_table, "run_task", lambda *a, **k: pytest.fail("the committed task is not run again"))
    base, profile = tiny
    calibrated = replace(VARIANTS[1], calibrated=True)
    assert calibrated.label == "scaleot (alpha 0.5, beta 0.5, task-calibrated)"
    out = tmp_path / "new"
    result = paper_table.run(base, profile, ["a"], [VARIANTS[1], calibrated], budget, out, "c",
                             load_task=load, log=lambda _: None, from_results=source)
    plain, tuned = result["tasks"][0]["rows"]
    assert [s["variant"] for s in result["summary"]] == [VARIANTS[1].label, calibrated.label]  # uniform set aside
    assert plain == committed["tasks"][0]["rows"][1]  # taken from the committed file, not re-run
    assert tuned["calibrated"] and tuned["calibration"]["n_prompts"] + tuned["calibration"]["n_check"] == 8
    assert tuned["emulator_id"] != plain["emulator_id"]
    assert tuned["emulator_id"] == task_run.expected_emulator_id(base, profile, calibrated, toy_task("a").train)
    assert 0.0 <= tuned["fidelity"]["agreement_before_calibration"] <= 1.0
    entry = result["summary"][1]
    for name in ("privacy_gap_vs_uncalibrated", "plug_in_vs_uncalibrated", "emulator_fine_tuned_vs_uncalibrated"):
        assert entry[name] is not None and len(entry[name]["ci95"]) == 2
    assert result["summary"][0]["privacy_gap_vs_uncalibrated"] is None
    privacy = lambda row: row["plug_in"]["acc"][0] - row["emulator_fine_tuned"]["acc"][0]  # noqa: E731
    assert entry["privacy_gap_vs_uncalibrated"]["mean"] == pytest.approx(100 * (privacy(tuned) - privacy(plain)))
    assert "## Task calibration" in (out / "paper-table-c.md").read_text()

    again = paper_table.run(base, profile, ["a"], [VARIANTS[1], calibrated], budget, out, "c",
                            load_task=load, log=lambda _: None, from_results=source)
    assert again["tasks"] == result["tasks"]  # resumed from its own state: nothing runs twice
    with pytest.raises(StateMismatchError, match="another budget"):
        paper_table.run(base, profile, ["a"], [calibrated], toy_budget(seeds=(1,), lr_grid=(1e-2,), full_lr_grid=()),
                        tmp_path / "other", "c", load_task=load, log=lambda _: None, from_results=source)
