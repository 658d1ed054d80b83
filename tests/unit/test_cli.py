from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_build_ot_kd_emulator_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model_owner_server.emulators.distill as distill

    fast = distill.DistillSettings(steps=5, batch_size=2, seq_len=32, check_sequences=2)
    monkeypatch.setattr(distill, "DistillSettings", lambda: fast)  # the default settings, made small
    monkeypatch.setenv("SCALEOT_PROGRESS", "plain")
    monkeypatch.setenv("SCALEOT_PROGRESS_INTERVAL", "0")
    out = tmp_path / "emu"
    result = runner.invoke(app, ["emulators", "build", "--model", "tiny-llama", "--method", "uniform", "--distill",
                                 "--adapter-bottom", "1", "--adapter-top", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = load_emulator(out)[2]
    assert manifest.distill is not None and manifest.distill.steps == 5
    assert "distilling the kept blocks (OT-KD)" in result.output and "100%" in result.output


def test_user_errors_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    cases = [
        (["--model", "no-such-model"], "unknown base model"),
        (["--model", "tiny-llama", "--method", "distill"], "--method must be scaleot or uniform"),
        (["--model", "tiny-llama", "--alpha", "1.5"], "alpha"),
        (["--model", "tiny-llama", "--adapter-bottom", "4", "--adapter-top", "4"], "leaves no middle"),
        (["--model", "tiny-llama", "--distill"], "--distill applies to --method uniform"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["emulators", "build", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_stage1_waits_for_another_process_training_the_same_profile() -> None:
    """The CLI (e.g. the stage-1 Job) takes the profile lock the workers take: it waits, then trains."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from model_owner_server.base_models import weights_sha256
    from model_owner_server.emulators.profile import Stage1Config, find_profile, profile_id
    from model_owner_server.emulators.profile_lock import profile_lock

    config = Stage1Config(steps=2, batch_size=2, seq_len=32, harmonizer_rank=8, adapter_bottom=1, adapter_top=1)
    pid = profile_id(weights_sha256("tiny-llama"), config)
    command = [sys.executable, "-c", "from model_owner_server.cli import app; app()", "emulators", "stage1",
               "--model", "tiny-llama", "--stage1",
               '{"steps": 2, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8}',
               "--adapter-bottom", "1", "--adapter-top", "1"]
    lines: list[str] = []
    with profile_lock(pid):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 90
        while not any("another process is training profile" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.2)
        assert find_profile(pid) is None  # it is waiting, not training
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.wait(120) == 0, lines
    assert pid in out and find_profile(pid) is not None
