"""Benchmark: does half precision change accuracy? Zero-shot and plug-in, float32 vs another dtype.

For each dtype, in one process and exactly as the service does it: load the base model in that
dtype, score it zero-shot on the task's test split, build a uniform (LayerDrop) emulator artifact
in that dtype, tune its adapter with `train_adapter` (float32 master copies of the adapter blocks),
check the adapter and plug it into the base model of that dtype, score again. The tuning seed, data
and learning rate are the same for every dtype. Uniform needs no stage-1 profile, so the comparison
isolates precision. Parity: |acc(dtype) - acc(float32)| within one standard error of the float32
accuracy; the paired standard error of the difference (same test items) is reported beside it.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.output import write_result
from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from model_owner_server import adapter_checks
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.evaluation.matrix import Score, score_model
from model_owner_server.plug_in import plug_in
from shared.precision import parse_dtype
from shared.tasks import as_training_examples, load_mc_task

ROWS = ("zero_shot", "plug_in")


def _score_json(score: Score) -> dict[str, Any]:
    return {"acc": score.value, "stderr": score.stderr, "n": score.n, "correct": score.correct}


def run_dtype(model: str, dtype_name: str, task: str, n_train: int, n_test: int | None, tuning: TuningConfig,
              workdir: Path) -> dict[str, Any]:
    data = load_mc_task(task)
    train = as_training_examples(data.train[:n_train])
    test = data.test if n_test is None else data.test[:n_test]
    started = time.perf_counter()
    base = load_base_model(model, parse_dtype(dtype_name))
    zero = score_model(base.model, base.tokenizer, test)
    spec = EmulatorSpec(base_model=model, method="uniform", alpha=0.5)
    manifest = build_emulator(base, spec, None, workdir / "emulator")
    tuned = train_adapter(workdir / "emulator", train, None, tuning, workdir / "adapter")
    plugged = plug_in(base, adapter_checks.validate(workdir / "adapter", base, manifest))
    plug = score_model(plugged, base.tokenizer, test)
    return {"dtype": dtype_name, "emulator_id": manifest.emulator_id, "manifest_dtype": manifest.dtype,
            "emulator_mb": sum(f.size for f in manifest.files.values()) / 1e6,
            "tuning_tokens_per_second": tuned.tokens_per_second, "seconds": time.perf_counter() - started,
            "zero_shot": _score_json(zero), "plug_in": _score_json(plug)}


def compare(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per row: the accuracy difference, the reference's standard error, the paired SE, the verdict."""
    out: dict[str, Any] = {}
    for row in ROWS:
        a, b = reference[row], other[row]
        diffs = [y - x for x, y in zip(a["correct"], b["correct"], strict=True)]
        n = len(diffs)
        mean = sum(diffs) / n
        var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
        out[row] = {"diff": b["acc"] - a["acc"], "reference_stderr": a["stderr"],
                    "paired_stderr": math.sqrt(var / n), "items_changed": sum(d != 0 for d in diffs),
                    "within_one_stderr": abs(b["acc"] - a["acc"]) <= (a["stderr"] or 0.0)}
    return out


def run(model: str, task: str, dtypes: list[str], out_dir: Path, n_train: int = 64, n_test: int | None = None,
        tuning: TuningConfig | None = None, threads: int | None = None) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    tuning = tuning or TuningConfig(epochs=1, lr=3e-4, batch_size=8, max_len=192)  # paper-table --quick's
    runs = []
    for name in dtypes:
        with tempfile.TemporaryDirectory(prefix=f"dtype-parity-{name}-") as tmp:
            runs.append(run_dtype(model, name, task, n_train, n_test, tuning, Path(tmp)))
    result = {"benchmark": "dtype-parity", "model": model, "task": task, "n_train": n_train,
              "n_test": runs[0]["zero_shot"]["n"], "tuning": tuning.model_dump(), "emulator": "uniform alpha 0.5",
              "torch_threads": torch.get_num_threads(), "runs": runs,
              "against": {r["dtype"]: compare(runs[0], r) for r in runs[1:]}}
    write_result(out_dir, f"dtype-parity-{model}-{task}", result, markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    reference = result["runs"][0]["dtype"]
    lines = [
        f"Accuracy parity on {result['model']}, task {result['task']}: {result['n_test']} test items, adapter tuned "
        f"on a {result['emulator']} emulator with {result['n_train']} examples (1 seed, lr {result['tuning']['lr']:g}, "
        f"{result['tuning']['epochs']} epoch); {result['torch_threads']} CPU threads. Accuracy % +- standard error.",
        "",
        "| dtype | zero-shot | plug-in | emulator (MB) | tuning tokens/s | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        z, p = r["zero_shot"], r["plug_in"]
        lines.append(f"| {r['dtype']} | {100 * z['acc']:.1f} +- {100 * z['stderr']:.1f} | "
                     f"{100 * p['acc']:.1f} +- {100 * p['stderr']:.1f} | {r['emulator_mb']:.0f} | "
                     f"{r['tuning_tokens_per_second']:.0f} | {r['seconds']:.0f} |")
    lines += ["", f"Against {reference} (points; parity = |difference| within one standard error of {reference}'s "
              "accuracy; the paired SE is that of the per-item difference):", "",
              "| dtype | row | difference | SE of the reference | paired SE | items changed | within one SE |",
              "|---|---|---|---|---|---|---|"]
    for name, rows in result["against"].items():
        for row, c in rows.items():
            lines.append(f"| {name} | {row} | {100 * c['diff']:+.1f} | {100 * c['reference_stderr']:.1f} | "
                         f"{100 * c['paired_stderr']:.1f} | {c['items_changed']} | "
                         f"{'yes' if c['within_one_stderr'] else 'no'} |")
    return "\n".join(lines) + "\n"
