"""Benchmark commands refuse bad options with one line and exit code 2 (usage), before loading any model."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from model_owner_server.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["bench", "jac-ab", "--weights", "0,one"], "--weights must be comma-separated numbers"),
    (["bench", "jac-ab", "--weights", "0,-1"], "values >= 0"),
    (["bench", "jac-ab", "--weights", ","], "--weights needs at least one number"),
    (["bench", "src-refit", "--betas", "0.5,1.5"], "each in (0, 1)"),
])
def test_bad_benchmark_options_are_one_line_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
