"""Benchmark: what stage 1 and an emulator cost as the base model grows (the capacity note's numbers).

For each model shape, in one process: the stage-1 step time of the default config (batch 4 x 128
tokens; median over timed steps after a warm-up step), its peak RSS growth, its cost in forward
passes of the full model (calibrated by this machine's matmul rate, so it carries over to other
hardware), and the size of the alpha = 0.5 emulator built from that run's profile. SmolLM2-135M is the real
model; the larger shapes are SmolLM2-360M and -1.7B configurations with random weights (a step costs
the same whatever the weights) and the real tokenizer.
"""

from __future__ import annotations

import copy
import gc
import json
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from model_owner_server.base_models import BaseModel, load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.profile import Stage1Config, profile_dir
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import Stage1Progress, run_stage1

MATMUL_N = 2048  # the dense fp32 matmul that calibrates this machine's FLOP rate
SHAPES: dict[str, dict[str, int]] = {  # SmolLM2 family configurations (HF model cards)
    "smollm2-360m-shape": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                           "num_attention_heads": 15, "num_key_value_heads": 5},
    "smollm2-1.7b-shape": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                           "num_attention_heads": 32, "num_key_value_heads": 32},
}


def shaped_model(name: str, real: BaseModel) -> BaseModel:
    """A random-weight model of a larger SmolLM2 shape, with the real model's tokenizer and vocabulary."""
    config = copy.deepcopy(real.model.config)  # same family, vocabulary, rope and norms; only the size differs
    for key, value in SHAPES[name].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return BaseModel(name=name, model=model, tokenizer=real.tokenizer, weights_sha256=f"random-{name}")


def matmul_gflop_s(repeats: int = 7) -> float:
    """This machine's dense fp32 matmul rate (median): what a step's time is converted to FLOPs with."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * MATMUL_N**3 / statistics.median(times) / 1e9


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(base: BaseModel, timed_steps: int, gflop_s: float, alpha: float = 0.5) -> dict[str, Any]:
    config = Stage1Config(steps=1 + timed_steps, checkpoint_every=10_000)
    stamps: list[float] = []

    def on_step(_: Stage1Progress) -> None:
        stamps.append(time.perf_counter())

    rss_before = _rss_mb()
    started = time.perf_counter()
    profile = run_stage1(base, config, on_progress=on_step)
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
        "params_m": params / 1e6,
        "blocks": base.num_layers,
        "tokens_per_step": tokens,
        "step_s": steps,
        "median_step_s": median,
        "default_run_h": median * Stage1Config().steps / 3600,
        # the step's cost in forward passes of the full model (2 * params FLOPs per token), measured:
        # the step time at this machine's matmul rate; it carries over to any hardware's FLOP rate
        "forward_pass_equivalents": median * gflop_s * 1e9 / (2 * params * tokens),
        "peak_rss_growth_mb": max(0.0, _rss_mb() - rss_before),
        "full_fp32_mb": full_bytes / 1e6,
        "emulator_mb": emulator_bytes / 1e6,
        "emulator_ratio": emulator_bytes / full_bytes,
        "alpha": alpha,
    }


def run(out_dir: Path, shapes: list[str], timed_steps: int = 3, threads: int | None = None) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    gflop_s = matmul_gflop_s()
    real = load_base_model("smollm2-135m")
    rows = [measure(real, timed_steps, gflop_s)]
    for name in shapes:
        gc.collect()
        rows.append(measure(shaped_model(name, real), timed_steps, gflop_s))
    result = {
        "benchmark": "stage1-cost",
        "config": Stage1Config().model_dump(),
        "timed_steps": timed_steps,
        "matmul_gflop_s": gflop_s,
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "rows": rows,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stage1-cost.json").write_text(json.dumps(result, indent=2))
    (out_dir / "stage1-cost.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Stage-1 cost, default config (batch {result['config']['batch_size']} x {result['config']['seq_len']} "
        f"tokens, {result['config']['steps']} steps), {result['torch_threads']} CPU threads; median of "
        f"{result['timed_steps']} steps after a warm-up. Dense fp32 matmul on this machine: "
        f"{result['matmul_gflop_s']:.0f} GFLOP/s.",
        "",
        "| model | params (M) | blocks | s/step | default run (h) | step = forward passes | peak RSS growth (MB) "
        "| full fp32 (MB) | emulator a=0.5 (MB) | emulator / full |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['params_m']:.0f} | {r['blocks']} | {r['median_step_s']:.2f} | "
            f"{r['default_run_h']:.2f} | {r['forward_pass_equivalents']:.1f} | {r['peak_rss_growth_mb']:.0f} | "
            f"{r['full_fp32_mb']:.0f} | {r['emulator_mb']:.0f} | {r['emulator_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"
