"""Benchmark commands refuse bad options with one line and exit code 2 (usage), before loading any model."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from benchmarks.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["jac-ab", "--weights", "0,one"], "--weights must be comma-separated numbers"),
    (["jac-ab", "--weights", "0,-1"], "values >= 0"),
    (["jac-ab", "--weights", ","], "--weights needs at least one number"),
    (["src-refit", "--betas", "0.5,1.5"], "each in (0, 1)"),
    (["paper-table", "--adapter", "2"], "--adapter must be BOTTOM,TOP"),
    (["paper-table", "--adapter", "0,0"], "at least one adapter block"),
    (["frontier", "--adapter", "1,-1"], "counts >= 0"),
    (["transfer-split", "--variant", "scaleot:0,uniform:0"], "--variant takes one variant"),
    (["transfer-split", "--variant", "lora:0"], "--variant methods must be one of"),
    (["transfer-split", "--variant", "scaleot:0:0.25:calibrated"], "calibrate with --calibrate"),
    (["paper-table", "--variants", "uniform:0:0.5:calibrated"], "only scaleot emulators have harmonizers"),
    (["paper-table", "--variants", "scaleot:0:calibrated:0.5"], "must look like uniform:0,scaleot:0.5[:alpha]"),
    (["transfer-split", "--task", "no_such_task"], "no_such_task"),
    (["transfer-split", "--lr", "5"], "--lr must be in (0, 1)"),
    (["transfer-split", "--seeds", "a"], "--seeds"),
    (["transfer-split", "--n-train", "-3"], "--n-train must be at least 1, got -3"),
    (["paper-table", "--n-test", "0"], "--n-test must be at least 1, got 0"),
    (["paper-table", "--n-valid", "-1"], "--n-valid must be at least 0"),
    (["paper-table", "--fidelity-batches", "-2"], "--fidelity-batches must be at least 0"),
    (["frontier", "--n-train", "0"], "--n-train must be at least 1"),
    (["transfer-split", "--corpus", "pile"], "--corpus must be one of calibration, calibration+instr"),
    (["transfer-split", "--stage1", '{"logit_kd": 1}'], "unknown stage-1 setting(s) logit_kd"),
    (["transfer-split", "--stage1", '{"logit_kd_weight": -1}'], "logit_kd_weight: Input should be greater"),
    (["transfer-split", "--stage1", "logit_kd_weight=1"], "must be a JSON object"),
])
def test_bad_benchmark_options_are_one_line_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_adapter_splits_and_their_labels() -> None:
    from benchmarks.offsite_tuning.options import adapter_label, parse_adapter

    assert parse_adapter(" 1, 3") == (1, 3) and parse_adapter("0,4") == (0, 4)
    assert adapter_label((2, 2)) == "" and adapter_label((1, 3)) == "-adapter1+3"


def test_stage1_labels_name_overrides_and_corpus() -> None:
    from benchmarks.offsite_tuning.options import stage1_label

    assert stage1_label("", "calibration") == ""
    assert stage1_label('{"logit_kd_weight": 1.0, "steps": 40}', "calibration+instructions") == (
        "-logit_kd_weight1-steps40-instructions")
