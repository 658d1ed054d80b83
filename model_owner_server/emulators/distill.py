"""Offsite-Tuning's distilled emulator (OT-KD): the strongest earlier baseline in the ScaleOT paper.

Uniform LayerDrop keeps evenly spaced middle blocks; OT-KD then trains those kept blocks so that the
hidden state entering the top adapter matches the full model's on general text, while the adapter
blocks stay exactly the full model's (they are what the data owner tunes and sends back).
Offsite-Tuning distils on the Pile for GPU hours; here it is a short run on the calibration corpus
with a budget like stage 1's, and the loss is the stage-1 KD error (per-token relative squared error
on ordinary tokens, the attention sink left out: `calibration.relative_error`).

A distillation that does not lower the error on held-out check sequences (the stream's tail, never
trained on) is discarded, so the step never ships an emulator worse than uniform LayerDrop by its own
measure.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from model_owner_server.emulators.calibration import (
    ordinary_tokens,
    relative_error,
    sample_sequences,
    top_adapter_input,
)
from shared.blocks import find_block_stack
from shared.manifest import DistillRecord
from shared.precision import fp32_master

DistillProgress = Callable[[float, str], None]  # (fraction done, message)


@dataclass(frozen=True)
class DistillSettings:
    """Sized so a 135M model distils in about the stage-1 budget on 2 CPU cores."""

    steps: int = 250  # an estimate of 12 minutes for SmolLM2-135M on 2 idle cores (4 steps timed at 3 s)
    batch_size: int = 4
    seq_len: int = 256
    lr: float = 1e-4  # Offsite-Tuning's distillation rate
    check_sequences: int = 16


@torch.no_grad()
def _check_error(full_targets: list[torch.Tensor], emulator: nn.Module, a_top: int, sequences: torch.Tensor,
                 batch_size: int) -> float:
    errors = []
    for b, start in enumerate(range(0, sequences.shape[0], batch_size)):
        batch = sequences[start : start + batch_size]
        mixed = ordinary_tokens(top_adapter_input(emulator, a_top, batch))
        errors.append(float(relative_error(mixed, full_targets[b])))
    return sum(errors) / len(errors)


def distill_kept_blocks(full_model: nn.Module, emulator: nn.Module, adapter_bottom: int, adapter_top: int,
                        stream: torch.Tensor, corpus: str, seed: int, settings: DistillSettings | None = None,
                        on_progress: DistillProgress | None = None) -> DistillRecord:
    """Train the middle blocks of the uniform `emulator` (in place) toward `full_model`; the adapter
    blocks, embeddings and head are left untouched. `stream`: the calibration token stream."""
    settings = settings or DistillSettings()
    started = time.perf_counter()
    emu_blocks = find_block_stack(emulator).blocks
    middle = [emu_blocks[i] for i in range(adapter_bottom, len(emu_blocks) - adapter_top)]
    generator = torch.Generator().manual_seed(seed + 7919)
    # The check sequences come from the stream's tail, which training never samples: with tens of
    # millions of trained weights, a check on seen text would keep an over-fitted distillation.
    tail = settings.check_sequences * settings.seq_len
    if stream.numel() < 4 * tail:
        raise ValueError(f"the calibration stream has {stream.numel()} tokens; distillation needs at least {4 * tail}")
    check = stream[-tail:].reshape(settings.check_sequences, settings.seq_len)
    stream = stream[:-tail]
    device = next(emulator.parameters()).device
    was_training = (full_model.training, emulator.training)
    full_model.eval()
    emulator.eval()  # no dropout: the target is deterministic
    size = settings.batch_size
    with torch.no_grad():
        check_targets = [ordinary_tokens(top_adapter_input(full_model, adapter_top, check[i : i + size].to(device)))
                         for i in range(0, check.shape[0], size)]
    before = _check_error(check_targets, emulator, adapter_top, check.to(device), settings.batch_size)
    original = [copy.deepcopy(block.state_dict()) for block in middle]
    frozen = [p for p in emulator.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    undo = [fp32_master(block) for block in middle]  # trained in float32 whatever the emulator's dtype
    params = [p for block in middle for p in block.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))  # short warm-up
    try:
        for step in range(settings.steps):
            batch = sample_sequences(stream, settings.batch_size, settings.seq_len, generator).to(device)
            with torch.no_grad():
                target = ordinary_tokens(top_adapter_input(full_model, adapter_top, batch))
            loss = relative_error(ordinary_tokens(top_adapter_input(emulator, adapter_top, batch)), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            if on_progress is not None:
                on_progress((step + 1) / settings.steps,
                            f"distilling the kept blocks (OT-KD): step {step + 1}/{settings.steps}, "
                            f"error {loss.detach().item():.3f}")
    finally:
        for p in params:
            p.requires_grad_(False)
        for fn in undo:
            fn()  # back to the emulator's dtype
        for p in frozen:
            p.requires_grad_(True)
    try:  # measured as shipped: in the emulator's own dtype
        after = _check_error(check_targets, emulator, adapter_top, check.to(device), settings.batch_size)
    finally:
        full_model.train(was_training[0])
        emulator.train(was_training[1])
    if after >= before:  # never ship worse than uniform LayerDrop by this step's own measure
        for block, state in zip(middle, original, strict=True):
            block.load_state_dict(state)
        after = before
    return DistillRecord(steps=settings.steps, batch_size=settings.batch_size, seq_len=settings.seq_len,
                         lr=settings.lr, seed=seed, corpus=corpus, error_before=before, error_after=after,
                         seconds=round(time.perf_counter() - started, 1))
