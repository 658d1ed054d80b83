"""Benchmark: the OT-KD emulator (uniform LayerDrop + distillation) beside plain uniform LayerDrop and
ScaleOT at the same alpha, from one profile: perplexity on held-out calibration text, KD error at the
top adapter's input, and the adapter-gradient cosine per adapter block on a task's training batches.

The distilled emulator is the benchmarks' cached one (`task_run.variant_emulator`): distilled on the
first run (its `distill` record gives the time that took), reused after.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.offsite_tuning.task_run import Variant, variant_emulator, variant_spec
from benchmarks.output import write_result
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.fidelity import emulator_fidelity
from model_owner_server.emulators.profile import ImportanceProfile
from shared.artifacts import load_emulator
from shared.tasks import as_training_examples, load_mc_task


def run(base: LoadedBase, profile: ImportanceProfile, alpha: float, task: str, n_batches: int, out_dir: Path,
        log: Any = print) -> dict[str, Any]:
    train = as_training_examples(load_mc_task(task).train[:320])
    rows = []
    with tempfile.TemporaryDirectory(prefix="scaleot-ot-kd-") as tmp:
        for method in ("ot-kd", "uniform", "scaleot"):
            variant = Variant(method, 0.0, alpha)
            started = time.perf_counter()
            directory, manifest = variant_emulator(base, variant_spec(base, profile, variant), profile,
                                                   Path(tmp) / method, log)
            built = time.perf_counter() - started
            emulator, _, _ = load_emulator(directory)
            report = emulator_fidelity(base, emulator, manifest, train, n_batches=n_batches)
            rows.append({"variant": variant.label, "emulator_id": manifest.emulator_id,
                         "build_or_load_s": round(built, 1),
                         "distill": manifest.distill.model_dump() if manifest.distill else None,
                         **report.model_dump(mode="json")})
            log(f"{variant.label}: perplexity {report.perplexity:.1f}, KD error {report.kd_error:.3f}")
    result = {"benchmark": "ot-kd", "model": base.name, "profile_id": profile.meta.profile_id, "alpha": alpha,
              "task": task, "gradient_batches": n_batches, "rows": rows,
              "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}}
    write_result(out_dir, f"ot-kd-{Path(base.name).name}", result, markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    blocks = sorted({b for row in result["rows"] for b in row["grad_cosine"]}, key=int)
    lines = [f"# OT-KD vs uniform LayerDrop vs ScaleOT, {result['model']}, alpha {result['alpha']:g}", "",
             f"Perplexity on held-out calibration text; KD error at the top adapter's input (ordinary tokens); "
             f"adapter-gradient cosine emulator vs full model per adapter block, {result['gradient_batches']} "
             f"training batches of {result['task']}.", "",
             "| emulator | perplexity | KD error | " + " | ".join(f"grad cos {b}" for b in blocks)
             + " | distillation (check error before -> after, s) |",
             "|---|---|---|" + "---|" * len(blocks) + "---|"]
    for row in result["rows"]:
        d = row["distill"]
        distill = f"{d['error_before']:.3f} -> {d['error_after']:.3f}, {d['seconds']:.0f} s" if d else "-"
        cosines = " | ".join(f"{row['grad_cosine'][b]:+.2f}" for b in blocks)
        lines.append(f"| {row['variant']} | {row['perplexity']:.1f} | {row['kd_error']:.3f} | {cosines} | {distill} |")
    return "\n".join(lines) + "\n"
