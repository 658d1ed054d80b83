"""Benchmark: stage 1 on N processes (torchrun, DDP) vs one process, same config and seed.

Both runs start from scratch in separate fresh profile caches (they have the same profile id), the
single process in this process, the DDP run as a `torch.distributed.run` subprocess. Reported: the
importance ranking of each, their agreement (argsort equality, Spearman rank correlation, largest
score difference), the largest harmonizer weight and DL-loss differences, and time per step.
For scale, the same agreement is measured between two single-process runs that differ only in the
number of torch threads (float32 summation order, nothing else): the numerical noise floor of stage 1.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from benchmarks.output import write_result
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.profile import ImportanceProfile, Stage1Config, find_profile
from model_owner_server.emulators.stage1 import Stage1Progress, run_stage1
from model_owner_server.emulators.stage1_launch import run_stage1_processes
from shared.cache import cache_dir


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties get their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = torch.tensor(ranks(a), dtype=torch.float64), torch.tensor(ranks(b), dtype=torch.float64)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator else 1.0


def compare(single: ImportanceProfile, multi: ImportanceProfile) -> dict[str, Any]:
    a, b = single.meta.importance, multi.meta.importance
    return {
        "same_profile_id": single.meta.profile_id == multi.meta.profile_id,
        "argsort_equal": torch.equal(torch.tensor(a).argsort(), torch.tensor(b).argsort()),
        "spearman": spearman(a, b),
        "max_abs_score_diff": max(abs(x - y) for x, y in zip(a, b, strict=True)),
        "max_abs_harmonizer_diff": max(
            float((single.harmonizers[k] - multi.harmonizers[k]).abs().max()) for k in single.harmonizers
        ),
        "max_abs_dl_loss_diff": max(
            abs(p.loss - q.loss) for p, q in zip(single.meta.curve, multi.meta.curve, strict=True)
        ),
        "max_abs_reward_diff": max(
            abs(p.reward - q.reward) for p, q in zip(single.meta.curve, multi.meta.curve, strict=True)
        ),
    }


@contextmanager
def fresh_cache() -> Iterator[Path]:
    """A temporary SCALEOT_CACHE_DIR sharing the real cache's packages and prepared models."""
    real = cache_dir()
    previous = os.environ.get("SCALEOT_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="scaleot-bench-cache-") as tmp:
        root = Path(tmp)
        for shared_dir in ("packages", "models"):
            (real / shared_dir).mkdir(parents=True, exist_ok=True)
            (root / shared_dir).symlink_to(real / shared_dir, target_is_directory=True)
        os.environ["SCALEOT_CACHE_DIR"] = str(root)
        try:
            yield root
        finally:
            if previous is None:
                os.environ.pop("SCALEOT_CACHE_DIR", None)
            else:
                os.environ["SCALEOT_CACHE_DIR"] = previous


def _per_step(times: list[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")


def _summary(profile: ImportanceProfile, step_times: list[float]) -> dict[str, Any]:
    scores = profile.meta.importance
    return {
        "importance": dict(zip(profile.meta.middle, scores, strict=True)),
        "least_important_first": [profile.meta.middle[i] for i in torch.tensor(scores).argsort().tolist()],
        "seconds_per_step": _per_step(step_times),
        "wall_seconds": profile.meta.wall_seconds,
        "final_dl_loss": profile.meta.curve[-1].loss,
        "profile_id": profile.meta.profile_id,
    }


def run(model: str, config: Stage1Config, nproc: int, out_dir: Path, texts: list[str] | None = None,
        single_threads: int | None = None) -> dict[str, Any]:
    if single_threads:
        torch.set_num_threads(single_threads)
    single_threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    rank_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))  # torchrun's default when unset: 1
    with fresh_cache():
        times: list[float] = []

        def tick(_: Stage1Progress) -> None:
            times.append(time.perf_counter())

        single = run_stage1(load_base_model(model), config, texts=texts, on_progress=tick)
    other_threads = 1 if single_threads > 1 else 2
    torch.set_num_threads(other_threads)
    try:
        with fresh_cache():
            single_other = run_stage1(load_base_model(model), config, texts=texts)
    finally:
        torch.set_num_threads(single_threads)
    with fresh_cache(), tempfile.TemporaryDirectory(prefix="scaleot-stage1-ddp-") as work:
        stamps: list[float] = []
        pid = run_stage1_processes(model, config, nproc, Path(work), texts=texts, threads=rank_threads,
                                   on_event=lambda e: stamps.append(e["t"]) if e["event"] == "step" else None)
        multi = find_profile(pid)
        assert multi is not None, pid
    result = {
        "model": model,
        "config": config.model_dump(),
        "corpus": "calibration" if texts is None else "custom",
        "nproc": nproc,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                 "single_threads": single_threads, "threads_per_rank": rank_threads,
                 "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}},
        "single": _summary(single, times),
        "ddp": _summary(multi, stamps),
        "comparison": compare(single, multi),
        "noise_floor": {"threads": [single_threads, other_threads], "comparison": compare(single, single_other)},
    }
    write_result(out_dir, f"stage1-ddp-{Path(model).name}", result, markdown(result) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    cfg, host, cmp = result["config"], result["host"], result["comparison"]
    floor = result["noise_floor"]["comparison"]
    t1, t2 = result["noise_floor"]["threads"]
    lines = [
        f"# Stage 1: {result['nproc']} processes (DDP, gloo) vs one process: {result['model']}",
        "",
        f"{cfg['steps']} steps, global batch {cfg['batch_size']} x {cfg['seq_len']} tokens, harmonizer rank "
        f"{cfg['harmonizer_rank']}, adapter {cfg['adapter_bottom']}+{cfg['adapter_top']}, seed {cfg['seed']}, "
        f"{result['corpus']} corpus; {host['cpus']} CPUs, torch {host['torch']}, 1-min load average "
        f"{host['load_average_1min']['before']:.1f} before / {host['load_average_1min']['after']:.1f} after "
        "(other work on a shared machine slows a multi-threaded process most).",
        "",
        "| run | processes x threads | s/step | wall s | final DL loss | blocks, least important first |",
        "|---|---|---|---|---|---|",
    ]
    for name, procs, threads in (("single process", 1, host["single_threads"]),
                                 ("DDP", result["nproc"], host["threads_per_rank"])):
        run = result["single" if name == "single process" else "ddp"]
        lines.append(f"| {name} | {procs} x {threads} | {run['seconds_per_step']:.3f} | {run['wall_seconds']:.1f} | "
                     f"{run['final_dl_loss']:.4f} | {' '.join(map(str, run['least_important_first']))} |")
    rows = [
        ("same profile id", "same_profile_id", "{}"),
        ("importance argsort equal", "argsort_equal", "{}"),
        ("Spearman rank correlation", "spearman", "{:.4f}"),
        ("max abs importance-score difference", "max_abs_score_diff", "{:.2e}"),
        ("max abs harmonizer weight difference", "max_abs_harmonizer_diff", "{:.2e}"),
        ("max abs DL-loss difference (any step)", "max_abs_dl_loss_diff", "{:.2e}"),
        ("max abs mean-reward difference (any step)", "max_abs_reward_diff", "{:.2e}"),
    ]
    lines += [
        "",
        f"| agreement | DDP vs single process | noise floor: single, {t1} vs {t2} threads |",
        "|---|---|---|",
        *(f"| {label} | {fmt.format(cmp[key])} | {fmt.format(floor[key])} |" for label, key, fmt in rows),
    ]
    return "\n".join(lines)
