"""Benchmark: emulator perplexity, size and generation time, scaleot vs uniform vs the full model.

Everything is measured in one process, side by side: the full model, then every (method, alpha,
beta) emulator generated from the same cached stage-1 profile, each scored on the same fixed
windows of held-out calibration text and of KJV.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.output import write_result
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.emulators.spec import EmulatorSpec
from shared.artifacts import unique_state, write_emulator
from shared.corpora import calibration_split, kjv_text
from shared.manifest import WEIGHTS_NAME, EmulatorOptions
from shared.perplexity import fixed_windows, perplexity

ALPHAS = (0.25, 0.5, 0.75)
BETAS = (0.0, 0.5)


def _state_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in unique_state(model).values())


def run(
    model_name: str,
    profile: ImportanceProfile,
    out_dir: Path,
    alphas: tuple[float, ...] = ALPHAS,
    betas: tuple[float, ...] = BETAS,
    window: int = 256,
    n_windows: int = 24,
    ablations: bool = True,
) -> dict[str, Any]:
    base = load_base_model(model_name)
    held_out = calibration_split()[1]
    kjv = kjv_text()
    sets = {
        "calibration_held_out": fixed_windows(base.tokenizer, held_out, window, n_windows),
        "kjv": fixed_windows(base.tokenizer, [kjv], window, n_windows),
    }
    full_bytes = _state_bytes(base.model)
    full = {name: perplexity(base.model, w) for name, w in sets.items()}
    rows: list[dict[str, Any]] = []
    cases: list[tuple[str, float, float, EmulatorOptions]] = [
        (method, alpha, beta, EmulatorOptions())
        for alpha in alphas
        for beta in betas
        for method in ("scaleot", "uniform")
    ]
    if ablations:
        cases += [
            ("scaleot", 0.5, 0.0, EmulatorOptions(harmonizers=False)),
            ("scaleot", 0.5, 0.0, EmulatorOptions(importance=False)),
        ]
    a_b, a_t = profile.meta.config.adapter_bottom, profile.meta.config.adapter_top
    for method, alpha, beta, options in cases:
        spec = EmulatorSpec(
            base_model=model_name,
            method=method,
            alpha=alpha,
            beta=beta,
            options=options,
            adapter_bottom=a_b,
            adapter_top=a_t,
        )
        started = time.perf_counter()
        emulator, manifest = generate_emulator(base, spec, profile)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = write_emulator(emulator, base.tokenizer, manifest, Path(tmp) / "emulator")
        build_s = time.perf_counter() - started
        kinds = [e.kind.value for e in manifest.layers]
        row = {
            "method": method,
            "alpha": alpha,
            "beta": beta,
            "variant": _variant(method, options),
            "blocks": len(kinds),
            "harmonizers": kinds.count("harmonizer"),
            "kept_middle": kinds.count("kept") + kinds.count("kept+src"),
            "emulator_bytes": manifest.files[WEIGHTS_NAME].size,
            "size_vs_full": manifest.files[WEIGHTS_NAME].size / full_bytes,
            "build_seconds": build_s,
        }
        for name, windows in sets.items():
            row[f"ppl_{name}"] = perplexity(emulator, windows)
        rows.append(row)
        print(_row_line(row), flush=True)
        del emulator
    result = {
        "benchmark": "emulator-quality",
        "model": model_name,
        "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "windows": {"tokens": window, "count": n_windows},
        "stage1": {
            "profile_id": profile.meta.profile_id,
            "steps": profile.meta.config.steps,
            "wall_seconds": profile.meta.wall_seconds,
            "peak_rss_mb": profile.meta.peak_rss_mb,
            "seconds_per_step": profile.meta.wall_seconds / max(1, len(profile.meta.curve)),
            "final_loss": profile.meta.curve[-1].loss if profile.meta.curve else None,
        },
        "full": {"bytes": full_bytes, **{f"ppl_{k}": v for k, v in full.items()}},
        "median_build_seconds": statistics.median(r["build_seconds"] for r in rows),
        "rows": rows,
    }
    write_result(out_dir, f"emulator-quality-{Path(model_name).name}", result, markdown(result))
    return result


def _variant(method: str, options: EmulatorOptions) -> str:
    if method == "uniform":
        return "uniform LayerDrop"
    off = [name for name, on in options.model_dump().items() if not on]
    return "scaleot" + (f" ({', '.join(off)} off)" if off else "")


def _row_line(row: dict[str, Any]) -> str:
    return (
        f"{row['variant']:<32} alpha={row['alpha']:<5} beta={row['beta']:<4} "
        f"ppl calib={row['ppl_calibration_held_out']:.1f} kjv={row['ppl_kjv']:.1f} "
        f"size={row['size_vs_full']:.2f}x build={row['build_seconds']:.1f}s"
    )


def markdown(result: dict[str, Any]) -> str:
    s1 = result["stage1"]
    full = result["full"]
    lines = [
        f"# Emulator quality: {result['model']}",
        "",
        f"Stage 1: {s1['steps']} steps, {s1['wall_seconds']:.0f} s wall ({s1['seconds_per_step']:.2f} s/step), "
        f"peak RSS {s1['peak_rss_mb']:.0f} MB, {result['host']['threads']} threads. "
        f"Perplexity on {result['windows']['count']} windows x {result['windows']['tokens']} tokens.",
        "",
        "| emulator | alpha | beta | blocks | harmonizers | ppl held-out calib | ppl KJV | size vs full | build s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| full model | - | - | - | - | {full['ppl_calibration_held_out']:.1f} | {full['ppl_kjv']:.1f} | 1.00 | - |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['variant']} | {r['alpha']} | {r['beta']} | {r['blocks']} | {r['harmonizers']} | "
            f"{r['ppl_calibration_held_out']:.1f} | {r['ppl_kjv']:.1f} | {r['size_vs_full']:.2f} | "
            f"{r['build_seconds']:.1f} |"
        )
    lines += [
        "",
        f"Median generation time from the cached profile (generate + write): {result['median_build_seconds']:.1f} s.",
        "",
    ]
    return "\n".join(lines)
