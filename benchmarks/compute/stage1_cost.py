"""Benchmark: what stage 1 and an emulator cost as the base model grows (the capacity note's numbers),
and what half precision saves.

For each model shape and each dtype of the frozen base (`--dtypes float32,bfloat16`; the harmonizers
train in float32 either way), in a fresh process of its own so that memory peaks do not mix: the
stage-1 step time of the default config (batch 4 x 128 tokens; median over timed steps after a
warm-up step), the peak RSS over those timed steps above the process before the model existed
(weights + training state + activations), its cost in forward passes of the full model (calibrated
by this machine's matmul rate in that dtype, so it carries over to other hardware), and the size of
the alpha = 0.5 emulator built from that run's profile. SmolLM2-135M is the real model; the larger
shapes are SmolLM2-360M and -1.7B configurations with random weights (a step costs the same whatever
the weights) and the real tokenizer. The training-free initialisation is shortened (it is not timed,
and the peak is taken after it).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from benchmarks.output import write_result
from model_owner_server.base_models import LoadedBase, load_base_model, prepare
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.profile import Stage1Config, profile_dir
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import Stage1Progress, run_stage1
from shared.precision import DTYPES, parse_dtype

REAL = "smollm2-135m"
MATMUL_N = 2048  # the dense matmul that calibrates this machine's FLOP rate (per dtype)
SHAPES: dict[str, dict[str, int]] = {  # SmolLM2 family configurations (HF model cards)
    "smollm2-360m-shape": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                           "num_attention_heads": 15, "num_key_value_heads": 5},
    "smollm2-1.7b-shape": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                           "num_attention_heads": 32, "num_key_value_heads": 32},
}
SHORT_INIT = {"fit_sequences": 8, "fit_steps": 20}  # untimed; the default (96, 300) only makes runs longer


def shaped_model(name: str, dtype: torch.dtype = torch.float32) -> LoadedBase:
    """A random-weight model of a larger SmolLM2 shape, with the real model's tokenizer and vocabulary,
    built directly in `dtype` (no float32 copy on the way)."""
    directory = prepare(REAL)
    config = AutoConfig.from_pretrained(directory)  # same family, vocabulary, rope and norms; only the size differs
    for key, value in SHAPES[name].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    return LoadedBase(name=name, model=model, tokenizer=AutoTokenizer.from_pretrained(directory),
                      weights_sha256=f"random-{name}")


def matmul_gflop_s(dtype: torch.dtype = torch.float32, repeats: int = 7) -> float:
    """This machine's dense matmul rate in `dtype` (median): what a step's time is converted to FLOPs with."""
    a, b = torch.randn(MATMUL_N, MATMUL_N).to(dtype), torch.randn(MATMUL_N, MATMUL_N).to(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * MATMUL_N**3 / statistics.median(times) / 1e9


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start or the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def measure(model: str, dtype_name: str, timed_steps: int, gflop_s: float, alpha: float = 0.5) -> dict[str, Any]:
    """One row, in this process (run it in a fresh one: `run` does)."""
    dtype = parse_dtype(dtype_name)
    config = Stage1Config(steps=1 + timed_steps, checkpoint_every=10_000, **SHORT_INIT)
    rss_before = _status_mb("VmRSS")
    base = load_base_model(REAL, dtype) if model == REAL else shaped_model(model, dtype)
    stamps: list[float] = []

    def on_step(_: Stage1Progress) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == 1:
            _reset_peak()  # the peak over the timed steps, after the initialisation and the warm-up

    started = time.perf_counter()
    profile = run_stage1(base, config, on_progress=on_step)
    peak_step = _status_mb("VmHWM")
    steps = [b - a for a, b in zip([started, *stamps[:-1]], stamps, strict=True)][1:]  # drop the warm-up
    params = sum(p.numel() for p in base.model.parameters())
    tokens = config.batch_size * config.seq_len
    median = statistics.median(steps)
    spec = EmulatorSpec(base_model=base.name, method="scaleot", alpha=alpha)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_emulator(base, spec, profile, Path(tmp) / "emulator")
        emulator_bytes = sum(f.size for f in manifest.files.values())
    shutil.rmtree(profile_dir(profile.meta.profile_id), ignore_errors=True)  # a few steps: not a profile to keep
    full_bytes = sum(p.numel() * p.element_size() for p in base.model.parameters())
    return {
        "model": base.name,
        "dtype": dtype_name,
        "params_m": params / 1e6,
        "blocks": base.num_layers,
        "tokens_per_step": tokens,
        "step_s": steps,
        "median_step_s": median,
        "default_run_h": median * Stage1Config().steps / 3600,
        # the step's cost in forward passes of the full model (2 * params FLOPs per token), measured:
        # the step time at this machine's matmul rate in this dtype; it carries over to any hardware's rate
        "forward_pass_equivalents": median * gflop_s * 1e9 / (2 * params * tokens),
        "peak_rss_growth_mb": peak_step - rss_before,  # over the timed steps, above the process without the model
        "weights_mb": full_bytes / 1e6,
        "emulator_mb": emulator_bytes / 1e6,
        "emulator_ratio": emulator_bytes / full_bytes,
        "alpha": alpha,
    }


def _measure_in_child(model: str, dtype_name: str, timed_steps: int, gflop_s: float, threads: int | None
                      ) -> dict[str, Any]:
    """`measure` in a fresh interpreter, so that each row's peak is its own."""
    args = json.dumps({"model": model, "dtype": dtype_name, "timed_steps": timed_steps, "gflop_s": gflop_s,
                       "threads": threads})
    done = subprocess.run([sys.executable, "-m", __name__, args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stage1-cost row {model} {dtype_name} failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def output_stem(dtypes: list[str]) -> str:
    """`stage1-cost` for the float32 capacity table; a comparison of dtypes gets its own files."""
    return "stage1-cost" if dtypes == ["float32"] else "stage1-cost-" + "-".join(dtypes)


def run(out_dir: Path, shapes: list[str], timed_steps: int = 3, threads: int | None = None,
        dtypes: list[str] | None = None) -> dict[str, Any]:
    dtypes = dtypes or ["float32"]
    if threads:
        torch.set_num_threads(threads)
    rates = {d: matmul_gflop_s(parse_dtype(d)) for d in dtypes}
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for model in [REAL, *shapes]:
        for d in dtypes:
            started = time.perf_counter()
            rows.append(_measure_in_child(model, d, timed_steps, rates[d], threads))
            print(f"stage1-cost: {model} {d} measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            result = _write(out_dir, rows, dtypes, rates, timed_steps)  # so far: a cut-short run keeps its rows
    return result


def _write(out_dir: Path, rows: list[dict[str, Any]], dtypes: list[str], rates: dict[str, float],
           timed_steps: int) -> dict[str, Any]:
    result = {
        "benchmark": "stage1-cost",
        "config": Stage1Config().model_dump(),
        "init": SHORT_INIT,
        "timed_steps": timed_steps,
        "dtypes": dtypes,
        "matmul_gflop_s": rates,
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "rows": rows,
    }
    write_result(out_dir, output_stem(dtypes), result, markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    rates = ", ".join(f"{d} {r:.0f}" for d, r in result["matmul_gflop_s"].items())
    lines = [
        f"Stage-1 cost, default config (batch {result['config']['batch_size']} x {result['config']['seq_len']} "
        f"tokens, {result['config']['steps']} steps), {result['torch_threads']} CPU threads; median of "
        f"{result['timed_steps']} steps after a warm-up, each row in a fresh process; peak RSS over the timed "
        f"steps above the process before the model was built. Harmonizers train in float32 whatever the "
        f"base's dtype. Dense matmul on this machine (GFLOP/s): {rates}.",
        "",
        "| model | dtype | params (M) | blocks | s/step | default run (h) | step = forward passes "
        "| peak RSS growth (MB) | weights (MB) | emulator a=0.5 (MB) | emulator / full |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['params_m']:.0f} | {r['blocks']} | {r['median_step_s']:.2f} | "
            f"{r['default_run_h']:.2f} | {r['forward_pass_equivalents']:.1f} | {r['peak_rss_growth_mb']:.0f} | "
            f"{r['weights_mb']:.0f} | {r['emulator_mb']:.0f} | {r['emulator_ratio']:.2f} |"
        )
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for r in result["rows"]:
        by_model.setdefault(r["model"], {})[r["dtype"]] = r
    pairs = [(m, d) for m, d in by_model.items() if "float32" in d and len(d) > 1]
    if pairs:
        lines += ["", "Against float32 (ratio of the half-precision row to the float32 row):", "",
                  "| model | dtype | step time | peak RSS growth | emulator size |", "|---|---|---|---|---|"]
        for model, rows in pairs:
            ref = rows["float32"]
            for name, r in rows.items():
                if name != "float32":
                    lines.append(f"| {model} | {name} | {r['median_step_s'] / ref['median_step_s']:.2f} | "
                                 f"{r['peak_rss_growth_mb'] / ref['peak_rss_growth_mb']:.2f} | "
                                 f"{r['emulator_mb'] / ref['emulator_mb']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # one row in a fresh process (see `_measure_in_child`); prints it as JSON
    row_args = json.loads(sys.argv[1])
    if row_args["threads"]:
        torch.set_num_threads(row_args["threads"])
    if row_args["dtype"] not in DTYPES:
        raise SystemExit(f"unknown dtype {row_args['dtype']!r}")
    print(json.dumps(measure(row_args["model"], row_args["dtype"], row_args["timed_steps"], row_args["gflop_s"])))
