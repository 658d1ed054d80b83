"""How faithful an emulator is as a training proxy, measured without a tuning run.

- perplexity on held-out calibration text (how much of the model's ability it keeps);
- KD error: per-token normalised squared error of the hidden state that reaches the top adapter,
  emulator vs full model, on ordinary tokens (position 0, the attention sink, left out);
- gradient cosine per adapter block: the cosine between the gradient of the task loss with respect
  to that block's parameters through the emulator and through the full model, on the same batches,
  at the untuned adapter. Tuning through the emulator follows the emulator's gradient; where it
  points elsewhere than the full model's (bottom blocks, whose gradient crosses the whole middle),
  the adapter is tuned for the wrong network (the idea behind GradOT).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn
from transformers import PreTrainedModel

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.calibration import ordinary_tokens, relative_error, top_adapter_input
from shared.blocks import find_block_stack
from shared.corpora import calibration_split
from shared.data_formats import TrainExample
from shared.manifest import EmulatorManifest
from shared.perplexity import fixed_windows, perplexity
from shared.training_batches import batches, encode, pad_token_id


class FidelityReport(BaseModel):
    perplexity: float
    kd_error: float
    grad_cosine: dict[int, float]  # full-model index of each adapter block -> cosine


def kd_error(full: nn.Module, emulator: nn.Module, a_top: int, windows: torch.Tensor, batch_size: int = 8) -> float:
    errors = []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        with torch.no_grad():
            target = ordinary_tokens(top_adapter_input(full, a_top, batch))
            mixed = ordinary_tokens(top_adapter_input(emulator, a_top, batch))
        errors.append(float(relative_error(mixed, target)) * batch.shape[0])
    return sum(errors) / windows.shape[0]


@contextmanager
def _only_blocks_trainable(model: nn.Module, blocks: list[int]) -> Iterator[list[list[nn.Parameter]]]:
    saved = [(p, p.requires_grad) for p in model.parameters()]
    stack = find_block_stack(model).blocks
    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        params = [list(stack[i].parameters()) for i in blocks]
        for group in params:
            for p in group:
                p.requires_grad_(True)
        yield params
    finally:
        for p, flag in saved:
            p.grad = None
            p.requires_grad_(flag)


def _block_gradients(model: nn.Module, blocks: list[int], data: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    with _only_blocks_trainable(model, blocks) as params:
        for batch in data:
            model(**batch, use_cache=False).loss.backward()
        return [torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in group])
                for group in params]


def gradient_cosine(full: nn.Module, emulator: nn.Module, manifest: EmulatorManifest,
                    data: list[dict[str, torch.Tensor]]) -> dict[int, float]:
    """Cosine of the summed task-loss gradients per adapter block, emulator vs full model."""
    full_idx = manifest.adapter_indices()
    to_full = manifest.emulator_to_full()
    emu_idx = sorted(e for e, f in to_full.items() if f in full_idx)
    was = full.training, emulator.training
    full.eval()
    emulator.eval()  # no dropout: both sides see the same function
    try:
        g_full = _block_gradients(full, full_idx, data)
        g_emu = _block_gradients(emulator, emu_idx, data)
    finally:
        full.train(was[0])
        emulator.train(was[1])
    return {to_full[e]: float(torch.nn.functional.cosine_similarity(ge, g_full[full_idx.index(to_full[e])], dim=0))
            for e, ge in zip(emu_idx, g_emu, strict=True)}


def task_batches(tokenizer: Any, examples: list[TrainExample], n_batches: int, batch_size: int = 8,
                 max_len: int = 192) -> list[dict[str, torch.Tensor]]:
    encoded = [encode(tokenizer, e, max_len) for e in examples[: n_batches * batch_size]]
    pad = pad_token_id(tokenizer)
    return batches(encoded, batch_size, pad)


def held_out_windows(tokenizer: Any, window: int = 256, n_windows: int = 24) -> torch.Tensor:
    return fixed_windows(tokenizer, calibration_split()[1], window, n_windows)


def emulator_fidelity(base: LoadedBase, emulator: PreTrainedModel, manifest: EmulatorManifest,
                      train_examples: list[TrainExample], n_batches: int = 4) -> FidelityReport:
    windows = held_out_windows(base.tokenizer)
    data = task_batches(base.tokenizer, train_examples, n_batches)
    return FidelityReport(
        perplexity=perplexity(emulator, windows),
        kd_error=kd_error(base.model, emulator, manifest.adapter_top, windows),
        grad_cosine=gradient_cosine(base.model, emulator, manifest, data),
    )
