"""Benchmark: what stage 1's Jacobian-matching term (`jac_weight`) buys for the bottom adapter.

Forward KD alone leaves the replaced middle's Jacobian free, and the bottom adapter's gradient
flows through it: the adapter-gradient cosine between emulator and full model was about 0 for the
bottom blocks (docs/method-notes.md). One stage-1 profile per `jac_weight` (the default config
otherwise; profiles are cached), the emulator at one alpha (beta 0), and its fidelity: held-out
perplexity, KD error on ordinary tokens, and the adapter-gradient cosine per adapter block on a
task's training batches (the same batches for every profile).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.output import write_result
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.fidelity import emulator_fidelity
from model_owner_server.emulators.obtain import obtain_profile
from model_owner_server.emulators.profile import Stage1Config
from model_owner_server.emulators.spec import EmulatorSpec
from shared.tasks import as_training_examples, load_mc_task


def run(model: str, weights: list[float], alpha: float, task: str, n_batches: int, out_dir: Path,
        log: Any = print) -> dict[str, Any]:
    base = load_base_model(model)
    for p in base.model.parameters():
        p.requires_grad_(False)
    examples = as_training_examples(load_mc_task(task).train)
    rows: list[dict[str, Any]] = []
    result = {"benchmark": "jac-ab", "model": model, "alpha": alpha, "task": task, "batches": n_batches,
              "rows": rows, "host": {"machine": platform.machine(), "threads": torch.get_num_threads(),
                                     "torch": torch.__version__}}
    for weight in weights:
        config = Stage1Config(jac_weight=weight)
        started = time.perf_counter()
        profile = obtain_profile(base, config)
        stage1_s = time.perf_counter() - started
        spec = EmulatorSpec(base_model=base.name, alpha=alpha, beta=0.0, adapter_bottom=config.adapter_bottom,
                            adapter_top=config.adapter_top)
        emulator, manifest = generate_emulator(base, spec, profile)
        report = emulator_fidelity(base, emulator, manifest, examples, n_batches)
        bottom = manifest.adapter_indices()[:config.adapter_bottom]
        rows.append({"jac_weight": weight, "jac_eps": config.jac_eps, "profile_id": profile.meta.profile_id,
                     "stage1_seconds": round(stage1_s, 1), "perplexity": report.perplexity,
                     "kd_error": report.kd_error, "grad_cosine": {str(k): v for k, v in report.grad_cosine.items()},
                     "bottom_cosine_mean": sum(report.grad_cosine[i] for i in bottom) / len(bottom)})
        log(_line(rows[-1]))
        _write(result, out_dir)  # after every profile: a run cut short keeps what it measured
        del emulator
    return result


def _write(result: dict[str, Any], out_dir: Path) -> None:
    write_result(out_dir, f"jac-ab-{Path(result['model']).name}", result, markdown(result))


def _line(row: dict[str, Any]) -> str:
    cosines = " ".join(f"{k}:{v:+.2f}" for k, v in row["grad_cosine"].items())
    return (f"| {row['jac_weight']:g} | {row['perplexity']:.1f} | {row['kd_error']:.3f} | {cosines} | "
            f"{row['bottom_cosine_mean']:+.2f} | {row['stage1_seconds']:.0f} |")


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Stage 1's Jacobian-matching term ({result['model']}, alpha {result['alpha']}, beta 0)", "",
             f"Adapter-gradient cosine (emulator vs full model, same {result['batches']} batches of "
             f"{result['task']} training examples, at initialisation) per adapter block (full-model index); "
             "perplexity on held-out calibration text; KD error on ordinary tokens. Stage 1 seconds: 0 when the "
             "profile was cached.", "",
             "| jac_weight | perplexity | KD error | grad cosine per adapter block | bottom mean | stage 1 s |",
             "|---|---|---|---|---|---|"]
    lines += [_line(row) for row in result["rows"]]
    return "\n".join(lines) + "\n"
