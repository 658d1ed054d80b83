"""Stage 1 under torchrun (2 processes, gloo, DDP) matches the single process, resumes, and fails clearly.

Measured on this code (tiny-llama, 40 steps, global batch 4 x 32, TEXTS): the importance argsort is
identical, the largest importance-score difference is ~2e-6, the largest harmonizer weight difference
~1e-7 and the DL losses agree to ~5e-7 (float32 summation order: DDP averages two half-batch
gradients, the single process sums one full batch). The tolerances below leave a margin of ~50x.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.compute.stage1_ddp import compare, spearman
from model_owner_server.base_models import load_base_model
from model_owner_server.cli import app
from model_owner_server.emulators.distributed import Collective, check_world
from model_owner_server.emulators.profile import checkpoint_dir, corpus_tag, find_profile, profile_dir, profile_id
from model_owner_server.emulators.stage1 import Stage1Cancelled, Stage1Progress, run_stage1
from model_owner_server.emulators.stage1_launch import Stage1ProcessError, run_stage1_processes
from tests.unit.helpers import TEXTS, tiny_config

CONFIG = tiny_config(steps=40, batch_size=4, checkpoint_every=10)
SCORE_ATOL = 1e-4
HARMONIZER_ATOL = 1e-5


def test_two_processes_stop_resume_and_match_the_single_process(tmp_path: Path) -> None:
    base = load_base_model("tiny-llama")
    pid = profile_id(base.weights_sha256, CONFIG, corpus_tag(TEXTS))
    seen: list[Stage1Progress] = []

    # 1. stop after a checkpoint was written (step 10): rank 0 checkpoints, every rank exits
    with pytest.raises(Stage1Cancelled, match="resumes from there"):
        run_stage1_processes("tiny-llama", CONFIG, 2, tmp_path / "run", texts=TEXTS, on_progress=seen.append,
                             should_stop=lambda: bool(seen) and seen[-1].step >= 12, poll_s=0.02)
    assert find_profile(pid) is None
    assert (checkpoint_dir(pid) / "state.json").is_file()
    stopped_at = seen[-1].step

    # 2. resume on two processes: the same profile id as the single process, the whole curve
    seen.clear()
    assert run_stage1_processes("tiny-llama", CONFIG, 2, tmp_path / "run", texts=TEXTS,
                                on_progress=seen.append) == pid
    assert seen[0].step == stopped_at + 1 and seen[-1].step == 40  # resumed where rank 0 checkpointed
    multi = find_profile(pid)
    assert multi is not None and [p.step for p in multi.meta.curve] == list(range(1, 41))
    assert not checkpoint_dir(pid).exists()

    # 3. the single process from scratch, same config and seed
    shutil.rmtree(profile_dir(pid))
    single = run_stage1(base, CONFIG, texts=TEXTS)
    result = compare(single, multi)
    assert result["same_profile_id"]
    assert result["argsort_equal"], (single.meta.importance, multi.meta.importance)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["max_abs_score_diff"] < SCORE_ATOL, result
    assert result["max_abs_dl_loss_diff"] < 1e-4, result
    for key, tensor in single.harmonizers.items():
        torch.testing.assert_close(multi.harmonizers[key], tensor, rtol=0, atol=HARMONIZER_ATOL)


def test_batch_size_must_divide_by_the_number_of_processes(tmp_path: Path) -> None:
    bad = tiny_config(batch_size=3)
    with pytest.raises(ValueError, match="batch_size 3 is not divisible by 2 processes"):
        check_world(bad, 2)
    with pytest.raises(ValueError, match="batch_size 3 is not divisible by 2 processes"):
        run_stage1_processes("tiny-llama", bad, 2, tmp_path / "run", texts=TEXTS)
    check_world(bad, 1)
    check_world(tiny_config(batch_size=4), 4)


def test_failing_processes_report_the_error(tmp_path: Path) -> None:
    with pytest.raises(Stage1ProcessError, match=r"rank \d: BaseModelError: unknown base model 'no-such-model'"):
        run_stage1_processes("no-such-model", CONFIG, 2, tmp_path / "run")
    assert (tmp_path / "run" / "output.log").is_file()


def test_cli_stage1(tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["emulators", "stage1", "--model", "tiny-llama", "--adapter-bottom", "1", "--adapter-top", "1"]
    settings = {"steps": 2, "seq_len": 32, "harmonizer_rank": 8}
    bad = runner.invoke(app, [*common, "--nproc", "2", "--stage1", json.dumps({**settings, "batch_size": 3})])
    assert bad.exit_code == 2 and "batch_size 3 is not divisible by 2 processes" in bad.output
    ok = runner.invoke(app, [*common, "--stage1", json.dumps({**settings, "batch_size": 2})])
    assert ok.exit_code == 0, ok.output
    assert "2 steps" in ok.stdout and "least important first" in ok.stdout


def test_single_process_collective_is_the_identity() -> None:
    comm = Collective()
    batch = torch.arange(12).reshape(4, 3)
    value = torch.tensor([1.5, -2.0])
    assert comm.shard(batch) is batch and comm.mean(value) is value and comm.wrap(torch.nn.Linear(1, 1)) is not None
    assert comm.agree(True) and not comm.agree(False) and comm.is_main and comm.world == 1


def test_spearman() -> None:
    assert spearman([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert abs(spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) - 0.8) < 1e-9
