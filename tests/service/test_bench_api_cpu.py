"""`bench api-cpu`: a data owner and a built emulator set up through the API, then every endpoint measured
(each answered 200, or the run fails), a table and JSON written."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.service_load import api_cpu


def test_the_benchmark_measures_every_endpoint(tmp_path: Path) -> None:
    result = api_cpu.run(requests=10, rounds=2)
    assert [row["endpoint"] for row in result["rows"]] == list(api_cpu.ENDPOINTS)
    assert all(len(row["cpu_us_per_round"]) == 2 and row["cpu_us_per_request"] > 0 for row in result["rows"])
    assert "| /v1/emulators/{id} |" in api_cpu.markdown(result)


def test_the_command_writes_json_and_markdown(tmp_path: Path) -> None:
    ran = CliRunner().invoke(app, ["api-cpu", "--requests", "10", "--rounds", "1", "--out", str(tmp_path)])
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "api-cpu-sqlite.json").is_file() and (tmp_path / "api-cpu-sqlite.md").is_file()
    refused = CliRunner().invoke(app, ["api-cpu", "--requests", "0"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output


def test_the_server_command_forwards_to_the_benchmarks_program(tmp_path: Path) -> None:
    """`scaleot-server bench ...` runs `scaleot-bench ...` as its own program (the server never imports it)."""
    import subprocess
    import sys

    command = [sys.executable, "-c", "from model_owner_server.cli import app; app()", "bench", "api-cpu",
               "--requests", "0"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--requests" in refused.stderr and "Traceback" not in refused.stderr
    listed = subprocess.run([*command[:4], "--help"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "paper-table" in listed.stdout and "transfer-split" in listed.stdout
