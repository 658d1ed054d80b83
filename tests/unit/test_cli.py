from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from model_owner_server.cli import app
from shared.artifacts import load_emulator

runner = CliRunner()


def test_models_list_json() -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"smollm2-135m", "tiny-llama", "tiny-gpt2", "tiny-opt", "tiny-qwen2"} <= names


def test_build_uniform_emulator(tmp_path: Path) -> None:
    out = tmp_path / "emu"
    result = runner.invoke(
        app,
        [
            "emulators",
            "build",
            "--model",
            "tiny-opt",
            "--method",
            "uniform",
            "--alpha",
            "0.5",
            "--beta",
            "0.5",
            "--adapter-bottom",
            "1",
            "--adapter-top",
            "1",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["method"] == "uniform" and manifest["beta"] == 0.5
    assert load_emulator(out)[2].emulator_id == manifest["emulator_id"]


def test_user_errors_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    cases = [
        (["--model", "no-such-model"], "unknown base model"),
        (["--model", "tiny-llama", "--method", "distill"], "--method must be scaleot or uniform"),
        (["--model", "tiny-llama", "--alpha", "1.5"], "alpha"),
        (["--model", "tiny-llama", "--adapter-bottom", "4", "--adapter-top", "4"], "leaves no middle"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["emulators", "build", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
