"""Benchmark: serving many adapters from one shared base (issue 30 item 4), measured side by side.

Memory per extra adapter: the bytes a full-block adapter adds on the shared base (its own block tensors)
against a plugged copy as the service kept them before (`copy.deepcopy` of the base + the blocks loaded)
and as `plug_in` makes them now (a copy sharing the base's storage outside the adapter's blocks).
Throughput: N concurrent greedy requests spread over M full-block adapters, (a) batched on the shared
base (continuous batching), (b) the same scheduler one request at a time, (c) today's path: each
request alone on its adapter's plugged copy with `generate`. Repetitions are interleaved; medians.

    python -m benchmarks.service_load.serve_adapters --model tiny-llama --model smollm2-135m
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from benchmarks.output import log, write_result
from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.plug_in import plug_in
from model_owner_server.serving.registry import Serving
from model_owner_server.serving.sinks import BlockingSink
from shared.adapter_format import block_tensors
from shared.blocks import find_block_stack

PROMPTS = ["The capital of France is", "Once upon a time", "To make a cake you need", "The best way to learn is",
           "In 1969 the first", "A list of fruits: apple,", "def fibonacci(n):", "Dear colleague, thank you for"]


def synthetic_adapter(base: LoadedBase, blocks: list[int], seed: int) -> CheckedAdapter:
    generator = torch.Generator().manual_seed(seed)
    stack = find_block_stack(base.model)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=generator).to(v.dtype)
             for k, v in block_tensors(base.model.state_dict(), stack.path, blocks).items()}
    return CheckedAdapter("full", Path("."), state)


def own_bytes(model: torch.nn.Module, shared: set[int]) -> int:
    """Bytes of the tensors of `model` whose storage is not in `shared` (counted once each)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in shared and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def memory(base: LoadedBase, adapter: CheckedAdapter, serving: Serving, name: str) -> dict[str, float]:
    base_ptrs = {t.untyped_storage().data_ptr() for t in [*base.model.parameters(), *base.model.buffers()]}
    loaded, _ = serving.acquire_adapter(name, "mem", lambda: adapter)
    serving.release("mem")
    deep = copy.deepcopy(base.model)
    deep.load_state_dict(adapter.state, strict=False)
    mb = 1024 * 1024
    return {"base_mb": own_bytes(base.model, set()) / mb, "shared_base_adapter_mb": loaded.nbytes / mb,
            "deepcopy_plugged_mb": own_bytes(deep, set()) / mb,
            "sharing_plug_in_mb": own_bytes(plug_in(base, adapter), base_ptrs) / mb}


def run_serving(serving: Serving, name: str, jobs: list[tuple[str, list[int]]], max_new: int) -> dict[str, float]:
    sinks = [BlockingSink() for _ in jobs]
    started = time.perf_counter()
    for (key, prompt), sink in zip(jobs, sinks, strict=True):
        adapter, _ = serving.acquire_adapter(name, key, never_loaded)
        serving.submit(name, serving.request(name, prompt, adapter, max_new, sink))
    for sink in sinks:
        sink.wait()
        assert sink.error is None, sink.error
    wall = time.perf_counter() - started
    tokens = sum(len(s.tokens) for s in sinks)
    ttft = [s.first_token_s or 0.0 for s in sinks]
    return {"tokens_per_s": tokens / wall, "wall_s": wall, "tokens": tokens, "ttft_p50_s": statistics.median(ttft)}


def loader(checked: CheckedAdapter) -> Callable[[], CheckedAdapter]:
    return lambda: checked


def never_loaded() -> CheckedAdapter:
    raise AssertionError("adapters are loaded before the timed runs")


@torch.inference_mode()
def run_plugged(base: LoadedBase, plugged: Mapping[str, torch.nn.Module], jobs: list[tuple[str, list[int]]],
                max_new: int) -> dict[str, float]:
    started = time.perf_counter()
    tokens = 0
    for key, prompt in jobs:
        ids = torch.tensor([prompt])
        out = plugged[key].generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,  # type: ignore[operator]
                                    do_sample=False, pad_token_id=base.tokenizer.pad_token_id)
        tokens += int(out.shape[1]) - len(prompt)
    wall = time.perf_counter() - started
    return {"tokens_per_s": tokens / wall, "wall_s": wall, "tokens": tokens}


def bench_model(name: str, n: int, m: int, max_new: int, reps: int) -> dict[str, Any]:
    base = load_base_model(name)
    last = base.num_layers - 1
    blocks = [0, 1, last - 1, last]
    adapters = {f"ada-{i}": synthetic_adapter(base, blocks, i) for i in range(m)}
    batched = Serving(lambda _: base, "cpu", 4096, max_batch=n, queue_limit=1024, retry_after_s=1)
    single = Serving(lambda _: base, "cpu", 4096, max_batch=1, queue_limit=1024, retry_after_s=1)
    for serving in (batched, single):
        for key, checked in adapters.items():
            serving.acquire_adapter(name, key, loader(checked))
            serving.release(key)
    log(f"{name}: memory")
    mem = memory(base, adapters["ada-0"], batched, name)
    plugged = {key: plug_in(base, checked) for key, checked in adapters.items()}
    jobs = [(f"ada-{i % m}", [int(t) for t in base.tokenizer(PROMPTS[i % len(PROMPTS)])["input_ids"]])
            for i in range(n)]
    runs: dict[str, list[dict[str, float]]] = {"batched": [], "one_at_a_time": [], "plugged_copies": []}
    for serving in (batched, single):  # warm-up: first calls of each kernel, the scheduler threads
        run_serving(serving, name, jobs[:2], 2)
    run_plugged(base, plugged, jobs[:1], 2)
    for rep in range(reps):  # interleaved, so drift in the machine's load hits every mode alike
        log(f"{name}: repetition {rep + 1}/{reps}")
        runs["batched"].append(run_serving(batched, name, jobs, max_new))
        runs["one_at_a_time"].append(run_serving(single, name, jobs, max_new))
        runs["plugged_copies"].append(run_plugged(base, plugged, jobs, max_new))
    batched.close()
    single.close()
    medians = {mode: statistics.median(r["tokens_per_s"] for r in rs) for mode, rs in runs.items()}
    return {
        "model": name, "dtype": str(next(base.model.parameters()).dtype).removeprefix("torch."), "device": "cpu",
        "adapter_blocks": blocks, "num_layers": base.num_layers, "memory_mb": mem,
        "concurrent_requests": n, "adapters": m, "max_new_tokens": max_new, "repetitions": reps,
        "tokens_per_s_median": medians,
        "ratios": {"batched_vs_one_at_a_time": medians["batched"] / medians["one_at_a_time"],
                   "batched_vs_plugged_copies": medians["batched"] / medians["plugged_copies"],
                   "plugged_copy_vs_shared_adapter_memory": mem["deepcopy_plugged_mb"] / mem["shared_base_adapter_mb"]},
        "runs": runs,
    }


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Serving many adapters from one shared base", "",
             f"torch {meta['torch']}, {meta['threads']} threads, {meta['machine']}; device cpu (no GPU tested).", "",
             "| model | dtype | full-block adapter on shared base (MB) | plugged copy, deepcopy (MB) | plugged copy, "
             "sharing plug_in (MB) | N req / M adapters | batched tok/s | one at a time tok/s | plugged copies tok/s "
             "| batched / one at a time | batched / plugged |", "|" + "---|" * 11]
    for r in results:
        mem, tps, ratio = r["memory_mb"], r["tokens_per_s_median"], r["ratios"]
        lines.append(f"| {r['model']} | {r['dtype']} | {mem['shared_base_adapter_mb']:.1f} | "
                     f"{mem['deepcopy_plugged_mb']:.1f} | {mem['sharing_plug_in_mb']:.1f} | "
                     f"{r['concurrent_requests']} / {r['adapters']} | {tps['batched']:.1f} | "
                     f"{tps['one_at_a_time']:.1f} | {tps['plugged_copies']:.1f} | "
                     f"{ratio['batched_vs_one_at_a_time']:.2f}x | "
                     f"{ratio['batched_vs_plugged_copies']:.2f}x |")
    lines += ["", f"Medians of {results[0]['repetitions']} interleaved repetitions, greedy, "
              f"{results[0]['max_new_tokens']} new tokens per request; each adapter replaces the first two and the "
              "last two blocks (`adapter_blocks` in the JSON); N requests submitted at once."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--max-new", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [bench_model(name, args.requests, args.adapters, args.max_new, args.reps)
               for name in args.model or ["tiny-llama"]]
    meta = {"torch": torch.__version__, "threads": args.threads, "machine": platform.machine()}
    path = write_result(args.out, "serve-adapters", {"meta": meta, "results": results}, markdown(results, meta))
    log(f"wrote {path}.json and .md")


if __name__ == "__main__":
    main()
