"""Progress without a terminal: plain lines (step, percent, elapsed, estimate) at a modest interval,
from the library and from both command lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from data_owner_client.cli import app as client_app
from data_owner_client.commands.common import wait_with_progress
from model_owner_server.base_models import load_base_model
from model_owner_server.cli import app as server_app
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from shared.api import JobStatus
from shared.progress import PlainProgress, duration, plain_wanted

runner = CliRunner()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_at_an_interval_with_percent_elapsed_and_estimate() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress("stage 1", 200, Console(file=out), interval=30, clock=clock)
    bar.update(1, loss=3.5)
    for step, now in [(10, 10.0), (30, 29.0), (41, 30.0), (60, 45.0), (200, 50.0), (200, 70.0)]:
        clock.now = now
        bar.update(step, loss=2.0)
    assert out.getvalue().splitlines() == [
        "stage 1: step 1/200 (0%), elapsed 0s, loss 3.500",
        "stage 1: step 41/200 (20%), elapsed 30s, about 1m43s left, loss 2.000",  # 31 steps in 20 s since step 10
        "stage 1: step 200/200 (100%), elapsed 50s, about 0s left, loss 2.000",  # the end, once
    ]


def test_fractions_and_byte_counts() -> None:
    out, clock = io.StringIO(), FakeClock()
    job = PlainProgress("building e1", 1.0, Console(file=out), unit=None, interval=0, clock=clock)
    job.update(0.25, description="running: stage 1 step 50/200")
    clock.now = 60.0
    job.update(0.5, description="running: stage 1 step 100/200")
    clock.now = 120.0
    job.update(0.75, description="running: stage 1 step 150/200")
    download = PlainProgress("downloading", 4e6, Console(file=out), unit="", interval=0, clock=clock,
                             count=lambda n: f"{n / 1e6:.1f} MB")
    download.update(1e6, description="emulator.safetensors")
    assert out.getvalue().splitlines() == [
        "running: stage 1 step 50/200: 25%, elapsed 0s",
        "running: stage 1 step 100/200: 50%, elapsed 1m00s",
        "running: stage 1 step 150/200: 75%, elapsed 2m00s, about 1m00s left",
        "emulator.safetensors: 1.0 MB/4.0 MB (25%), elapsed 0s",
    ]
    assert duration(3725) == "1h02m"


def test_time_before_the_first_step_and_earlier_phases_is_not_step_time() -> None:
    """Stage 1's initialisation (minutes at 1%) once made a run of minutes say "about 11h45m left"."""
    out, clock = io.StringIO(), FakeClock()
    job = PlainProgress("building e1", 1.0, Console(file=out), unit=None, interval=0, clock=clock)
    job.update(0.01, description="running: stage 1 initialisation: fitting harmonizers")
    clock.now = 420.0  # seven minutes of initialisation, no estimate meanwhile
    job.update(0.01, description="running: stage 1 initialisation: fitting harmonizers")
    clock.now = 424.0
    job.update(0.02, description="running: stage 1 step 1/100: loss 4.2")
    clock.now = 428.0
    job.update(0.03, description="running: stage 1 step 2/100: loss 4.1")
    clock.now = 432.0
    job.update(0.04, description="running: stage 1 step 3/100: loss 4.0")
    lines = out.getvalue().splitlines()
    assert not any("left" in line for line in lines[:4])
    assert lines[4].endswith("about 6m24s left")  # 0.01 per 4 s of steps, 0.96 to go
    clock.now = 500.0
    job.update(0.9, description="running: stage 2: SRC re-fit 1/3")  # a new phase: measured afresh
    assert "left" not in out.getvalue().splitlines()[-1]


def test_plain_without_a_terminal_bar_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALEOT_PROGRESS", raising=False)
    assert plain_wanted(Console(file=io.StringIO()))
    assert not plain_wanted(Console(file=io.StringIO(), force_terminal=True))
    monkeypatch.setenv("SCALEOT_PROGRESS", "plain")
    assert plain_wanted(Console(file=io.StringIO(), force_terminal=True))


@pytest.fixture
def every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOT_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("SCALEOT_PROGRESS", raising=False)


def test_scaleot_train_prints_progress_lines(tmp_path: Path, every_update: None) -> None:
    base = load_base_model("tiny-opt")
    build_emulator(base, EmulatorSpec(base_model="tiny-opt", method="uniform", alpha=0.5, adapter_bottom=1,
                                      adapter_top=1), None, tmp_path / "emu")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"context": f"q{i}", "target": " a"}) + "\n" for i in range(8)))
    result = runner.invoke(client_app, ["train", "--emulator", str(tmp_path / "emu"), "--data", str(data),
                                        "--out", str(tmp_path / "ad"), "--epochs", "2", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "tuning adapter: step 1/4 (25%), elapsed" in result.output
    assert "tuning adapter: step 4/4 (100%), elapsed" in result.output and "about 0s left" in result.output


def test_scaleot_wait_prints_progress_lines(capsys: pytest.CaptureFixture[str], every_update: None) -> None:
    def wait(show: Any) -> SimpleNamespace:  # the client's answers carry a typed `status` (shared.api)
        for fraction, message in [(0.1, "stage 1 step 20/200"), (0.5, "stage 1 step 100/200"), (1.0, "done")]:
            item = SimpleNamespace(status=JobStatus(job_id="job-1", state="running" if fraction < 1 else "succeeded",
                                                    progress=fraction, message=message))
            show(item)
        return item

    assert wait_with_progress("building e1", wait).status.state == "succeeded"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("running: stage 1 step 20/200: 10%, elapsed 0s")
    assert lines[-1].startswith("succeeded: done: 100%, elapsed") and "about 0s left" in lines[-1]


def test_scaleot_server_stage1_prints_progress_lines(every_update: None) -> None:
    result = runner.invoke(server_app, ["emulators", "stage1", "--model", "tiny-llama", "--stage1",
                                        '{"steps": 3, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8}',
                                        "--adapter-bottom", "1", "--adapter-top", "1"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("stage 1 (Dynamic LayerReplace)")]
    assert lines[-1].startswith("stage 1 (Dynamic LayerReplace): step 3/3 (100%), elapsed")
    assert "loss" in lines[-1] and "reward" in lines[-1]


def test_a_step_of_unknown_length_prints_its_start_and_end_without_a_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.progress import activity

    monkeypatch.setenv("SCALEOT_PROGRESS", "auto")
    out, clock = io.StringIO(), FakeClock()
    with activity(Console(file=out, width=200), "preparing smollm2-135m", clock=clock):
        clock.now = 65.0
    assert out.getvalue().splitlines() == ["preparing smollm2-135m ...", "preparing smollm2-135m: done in 1m05s"]
