"""Serving from one shared base: every row of a mixed batch (full-block adapters, LoRA adapters, the bare
base) equals, token for token at temperature 0, the same request run alone on a plugged copy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.serving.engine import merge, select_rows
from model_owner_server.serving.registry import Serving
from model_owner_server.serving.sinks import BlockingSink
from tests.unit.serving_helpers import full_adapter, lora_adapter, reference

PROMPTS = ["The capital of France is", "hi", "Once upon a time there was a", "item 3 is", "ab", "x y z w v u t"]


def make(name: str, tmp: Path) -> tuple[LoadedBase, Serving, dict[str, CheckedAdapter]]:
    base = load_base_model(name)
    last = base.num_layers - 1
    checked = {"full-a": full_adapter(base, [0, last], 1, tmp / "a"),
               "full-b": full_adapter(base, [0, 1, last], 2, tmp / "b"),
               "lora-c": lora_adapter(base, [0, last], 3, tmp / "c")}
    serving = Serving(lambda _: base, "cpu", max_adapter_mb=64, max_batch=8, queue_limit=16, retry_after_s=1)
    return base, serving, checked


def checker(checked: dict[str, CheckedAdapter], key: str) -> Callable[[], CheckedAdapter]:
    return lambda: checked[key]


def tokens(base: LoadedBase, text: str) -> list[int]:
    return [int(t) for t in base.tokenizer(text)["input_ids"]]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-opt"])
def test_mixed_batch_rows_equal_plugged_copies(name: str, tmp_path: Path) -> None:
    base, serving, checked = make(name, tmp_path)
    keys: list[str | None] = ["full-a", None, "lora-c", "full-b", "full-a", "lora-c"]
    prompts = [tokens(base, p) for p in PROMPTS]
    loaded = [serving.acquire_adapter(name, k, checker(checked, k))[0] if k else None for k in keys]
    engine = serving.served(name).engine
    max_new = 8
    # rows 0-3 start together; 4-5 join after two steps; row 1 leaves after three: padding moves both ways
    state, logits = engine.prefill(prompts[:4], loaded[:4])
    produced: list[list[int]] = [[int(t)] for t in logits.argmax(-1)]
    rows = [0, 1, 2, 3]
    for step in range(1, max_new):
        if step == 2:
            joined, first = engine.prefill(prompts[4:], loaded[4:])
            state = merge(state, joined)
            produced += [[int(t)] for t in first.argmax(-1)]
            rows += [4, 5]
        if step == 4:
            keep = [i for i, r in enumerate(rows) if r != 1]
            state, rows = select_rows(state, keep), [rows[i] for i in keep]
        last = torch.tensor([produced[r][-1] for r in rows])
        for r, token in zip(rows, engine.decode(state, last).argmax(-1), strict=True):
            produced[r].append(int(token))
    for r, key in enumerate(keys):
        want = reference(base, checked[key] if key else None, prompts[r], max_new)
        got = produced[r][:len(want)]  # the engine test does not stop at end-of-sequence
        n = {0: 8, 1: 4, 2: 8, 3: 8, 4: 6, 5: 6}[r]
        assert got[:n] == want[:n], (name, r, key)


def test_scheduler_batches_concurrent_requests_exactly(tmp_path: Path) -> None:
    base, serving, checked = make("tiny-llama", tmp_path)
    keys: list[str | None] = ["full-a", None, "lora-c", "full-b", "full-a", "lora-c", None, "full-b"]
    jobs = [(k, tokens(base, PROMPTS[i % len(PROMPTS)]), 3 + 2 * (i % 4)) for i, k in enumerate(keys)]
    sinks = [BlockingSink() for _ in jobs]

    def go(i: int) -> None:
        key, prompt, max_new = jobs[i]
        adapter = serving.acquire_adapter("tiny-llama", key, lambda: checked[key])[0] if key else None
        serving.submit("tiny-llama", serving.request("tiny-llama", prompt, adapter, max_new, sinks[i]))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (key, prompt, max_new) in enumerate(jobs):
        assert sinks[i].wait(60) and sinks[i].reason in ("stop", "length"), sinks[i].error
        assert sinks[i].tokens == reference(base, checked[key] if key else None, prompt, max_new), i
    assert serving.served("tiny-llama").scheduler.peak_batch > 1
    assert serving.pool._pins == {}  # every finished request unpinned its adapter
    serving.close()


def test_pool_evicts_by_bytes_not_count(tmp_path: Path) -> None:
    _, serving, checked = make("tiny-llama", tmp_path)
    one, _ = serving.acquire_adapter("tiny-llama", "full-a", lambda: checked["full-a"])
    serving.pool.budget_bytes = int(one.nbytes * 2.5)
    serving.release("full-a")
    for key in ("full-b", "lora-c"):
        serving.acquire_adapter("tiny-llama", key, checker(checked, key))
        serving.release(key)
    assert serving.pool.bytes_held <= serving.pool.budget_bytes and "full-a" not in serving.pool
    assert "lora-c" in serving.pool  # small: fits beside full-b
    # a pinned adapter stays even past the budget
    serving.pool.budget_bytes = 0
    serving.acquire_adapter("tiny-llama", "full-a", lambda: checked["full-a"])
    assert "full-a" in serving.pool and "full-b" not in serving.pool
