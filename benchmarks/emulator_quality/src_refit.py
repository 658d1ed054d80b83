"""Benchmark: what re-fitting the harmonizers after SRC buys (stage 2, beta > 0).

From one stage-1 profile, at one alpha: the emulator at beta 0 (no SRC, nothing to re-fit), then
for each beta > 0 the emulator with SRC and the stage-1 harmonizers as they are (`refit` off, the
old behaviour) and with the harmonizers re-fitted to the compressed blocks (`refit` on, the
default). Reported: perplexity on held-out calibration text (documents the re-fit never sees), the
mean per-token error of the harmonizers against the full model on the re-fit's own held-out
sequences before and after, and the build time (what the re-fit adds to an emulator build).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.output import write_result
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.fidelity import held_out_windows
from model_owner_server.emulators.obtain import obtain_profile
from model_owner_server.emulators.profile import Stage1Config
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.src_refit import RefitSettings
from shared.manifest import EmulatorOptions
from shared.perplexity import perplexity


def run(model: str, alpha: float, betas: list[float], out_dir: Path) -> dict[str, Any]:
    base = load_base_model(model)
    for p in base.model.parameters():
        p.requires_grad_(False)
    config = Stage1Config()
    profile = obtain_profile(base, config)  # the default profile (cached: the other benchmarks use it too)
    windows = held_out_windows(base.tokenizer)
    full = perplexity(base.model, windows)
    print(f"full model: perplexity {full:.2f}", flush=True)
    rows: list[dict[str, Any]] = []
    result = {"benchmark": "src-refit", "model": model, "profile_id": profile.meta.profile_id, "full_ppl": full,
              "alpha": alpha, "betas": betas, "rows": rows, "refit_settings": asdict(RefitSettings()),
              "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}}
    for beta in [0.0, *betas]:
        for refit in ([False] if beta == 0 else [False, True]):
            spec = EmulatorSpec(base_model=base.name, alpha=alpha, beta=beta, adapter_bottom=config.adapter_bottom,
                                adapter_top=config.adapter_top, options=EmulatorOptions(refit=refit))
            started = time.perf_counter()
            emulator, manifest = generate_emulator(base, spec, profile)
            build_s = time.perf_counter() - started
            row: dict[str, Any] = {"alpha": alpha, "beta": beta, "refit": manifest.refit is not None,
                                   "emulator_id": manifest.emulator_id, "build_seconds": round(build_s, 1),
                                   "ppl": perplexity(emulator, windows)}
            if manifest.refit is not None:
                before, after = manifest.refit.error_before, manifest.refit.error_after
                row["harmonizer_error_before"] = sum(before.values()) / len(before)
                row["harmonizer_error_after"] = sum(after.values()) / len(after)
                row["refit_seconds"] = manifest.refit.seconds
                row["refit_kept"] = sum(after[i] < before[i] for i in after)
                row["harmonizers"] = len(after)
            rows.append(row)
            print(_line(row), flush=True)
            _write(result, out_dir)  # after every row: a run cut short keeps what it measured
            del emulator
    return result


def _write(result: dict[str, Any], out_dir: Path) -> None:
    write_result(out_dir, f"src-refit-{Path(result['model']).name}", result, markdown(result))


def _line(row: dict[str, Any]) -> str:
    err = (f"{row['harmonizer_error_before']:.3f} -> {row['harmonizer_error_after']:.3f} "
           f"({row['refit_kept']}/{row['harmonizers']} kept)" if row["refit"] else "")
    refit = "on" if row["refit"] else ("off" if row["beta"] > 0 else "-")
    return f"| {row['beta']} | {refit} | {row['ppl']:.1f} | {err} | {row['build_seconds']:.0f} |"


def markdown(result: dict[str, Any]) -> str:
    s = result["refit_settings"]
    lines = [f"# Harmonizer re-fit after SRC ({result['model']}, alpha {result['alpha']}, "
             f"full model perplexity {result['full_ppl']:.1f})", "",
             f"Profile `{result['profile_id']}` (the default stage-1 config), adapter 2 + 2. Perplexity on held-out "
             "calibration text (24 windows x 256 tokens, documents the re-fit never sees). Harmonizer error: mean "
             "per-token error against the full model's output of the replaced block, on the re-fit's "
             f"{s['check_sequences']} held-out sequences, stage-1 weights -> shipped weights. Re-fit: "
             f"{s['sequences']} x {s['seq_len']} tokens, {s['steps']} Adam steps per harmonizer, lr {s['lr']}; "
             f"{result['host']['threads']} threads.", "",
             "| beta | re-fit | perplexity | harmonizer error | build s |", "|---|---|---|---|---|"]
    lines += [_line(r) for r in result["rows"]]
    return "\n".join(lines) + "\n"
