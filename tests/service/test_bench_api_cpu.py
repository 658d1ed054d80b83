"""`bench api-cpu`: a data owner and a built emulator set up through the API, then every endpoint measured
(each answered 200, or the run fails), a table and JSON written."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from model_owner_server.bench import api_cpu
from model_owner_server.cli import app


def test_the_benchmark_measures_every_endpoint(tmp_path: Path) -> None:
    result = api_cpu.run(requests=10, rounds=2)
    assert [row["endpoint"] for row in result["rows"]] == list(api_cpu.ENDPOINTS)
    assert all(len(row["cpu_us_per_round"]) == 2 and row["cpu_us_per_request"] > 0 for row in result["rows"])
    assert "| /v1/emulators/{id} |" in api_cpu.markdown(result)


def test_the_command_writes_json_and_markdown(tmp_path: Path) -> None:
    ran = CliRunner().invoke(app, ["bench", "api-cpu", "--requests", "10", "--rounds", "1", "--out", str(tmp_path)])
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "api-cpu-sqlite.json").is_file() and (tmp_path / "api-cpu-sqlite.md").is_file()
    refused = CliRunner().invoke(app, ["bench", "api-cpu", "--requests", "0"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
