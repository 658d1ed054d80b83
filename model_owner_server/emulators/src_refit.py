"""Re-fit the harmonizers after Selective Rank Compression (stage 2, beta > 0).

Stage 1 trains the harmonizers around *uncompressed* kept blocks; stage 2 then truncates the
attention projections of those blocks, so every harmonizer above a compressed block receives a
hidden state it was never trained on, and the compression error reaches the top adapter unchecked
(without this step, beta 0.5 doubled a task's utility gap). This step runs the
compressed emulator on calibration sequences and re-fits its harmonizers one by one, bottom to top:

- input: the hidden state that actually reaches the harmonizer in the compressed emulator (SRC
  blocks and the already re-fitted harmonizers below it);
- target: the full model's hidden state at the output of the block the harmonizer replaces,

so each harmonizer also absorbs the error of the compressed blocks below it. The loss is the
stage-1 regression's (per-token normalised error on ordinary tokens, the attention sink left out),
started from the stage-1 weights. A re-fit is kept only if it lowers the harmonizer's error on
held-out calibration sequences, so the step never makes a harmonizer worse by its own measure.

Cost: one full-model forward for the targets, then one pass over the emulator blocks between
consecutive harmonizers each (the blocks below the previous harmonizer are replayed from cache, not
recomputed), and `steps` small Adam steps per harmonizer.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model_owner_server.emulators.calibration import capture_middle, ordinary_tokens, sample_sequences
from model_owner_server.emulators.harmonizer_fit import fit_harmonizer, replacement_error
from shared.blocks import find_block_stack, set_block_stack
from shared.harmonizer import Harmonizer
from shared.manifest import LayerEntry, LayerKind, RefitRecord

RefitProgress = Callable[[float, str], None]  # (fraction of the re-fit done, message)


@dataclass(frozen=True)
class RefitSettings:
    """Bounded so an emulator build stays within minutes on 2 CPU cores for a 135M model."""

    sequences: int = 48  # calibration sequences the harmonizers are fitted on
    check_sequences: int = 16  # held out: a re-fit that does not lower their error is discarded
    seq_len: int = 128
    steps: int = 150  # Adam steps per harmonizer
    lr: float = 1e-3  # lower than stage 1's regression (3e-3): it starts from trained weights
    batch_tokens: int = 2048
    batch_size: int = 8  # sequences per forward pass


class _Stop(Exception):
    """Ends the emulator's forward once the re-fitted harmonizer's input is captured."""


class _PassThrough(nn.Module):
    """Stands in for an emulator block below the replay point (its output is never used)."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class _Replay(nn.Module):
    """Returns the cached hidden state leaving this block, so the blocks below are not recomputed."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert self.value is not None
        return self.value


class _Capture(nn.Module):
    """Keeps the hidden state entering this block and stops the forward (nothing above is needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.seen = hidden_states.detach().clone()
        raise _Stop


@torch.no_grad()
def _inputs_at(emulator: nn.Module, target: int, boundary: int, cached: list[torch.Tensor] | None,
               sequences: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Per batch of `sequences`: the hidden state entering emulator block `target`, with the hidden
    state leaving block `boundary` (< target) taken from `cached` instead of recomputed."""
    stack = find_block_stack(emulator)
    original = stack.blocks
    blocks: list[nn.Module] = list(original)  # full length: some families index per-layer config by position
    replay = _Replay()
    if boundary >= 0:
        blocks[:boundary] = [_PassThrough() for _ in range(boundary)]
        blocks[boundary] = replay
    capture = _Capture()
    blocks[target] = capture
    set_block_stack(emulator, stack.path, nn.ModuleList(blocks))
    device = next(original.parameters()).device
    seen: list[torch.Tensor] = []
    try:
        for b, start in enumerate(range(0, sequences.shape[0], batch_size)):
            replay.value = cached[b] if cached is not None else None
            with contextlib.suppress(_Stop):
                emulator(input_ids=sequences[start : start + batch_size].to(device), use_cache=False)
            assert capture.seen is not None
            seen.append(capture.seen)
    finally:
        set_block_stack(emulator, stack.path, original)
    return seen


def refit_harmonizers(full_model: nn.Module, emulator: nn.Module, layers: list[LayerEntry], stream: torch.Tensor,
                      corpus: str, seed: int, settings: RefitSettings | None = None,
                      on_progress: RefitProgress | None = None) -> RefitRecord | None:
    """Re-fit the harmonizers of `emulator` (in place) against `full_model`; None if it has none.

    `stream` is the calibration token stream; `seed` decides the sequences and every minibatch."""
    settings = settings or RefitSettings()
    harmonizers = [(e.emulator_index, e.full_index) for e in layers if e.kind == LayerKind.harmonizer]
    if not harmonizers:
        return None
    started = time.perf_counter()
    n_fit = settings.sequences
    sequences = sample_sequences(stream, n_fit + settings.check_sequences, settings.seq_len,
                                 torch.Generator().manual_seed(seed + 104_729))
    was_training = emulator.training
    emulator.eval()
    # Targets: the full model's output of every replaced block (the input of the next full block).
    first, last = harmonizers[0][1], harmonizers[-1][1]
    full = capture_middle(full_model, list(range(first, last + 1)), sequences, settings.batch_size)
    targets = {f: full.states[f - first + 1] for _, f in harmonizers}
    del full

    blocks = find_block_stack(emulator).blocks
    before: dict[int, float] = {}
    after: dict[int, float] = {}
    boundary, cached = -1, None
    threads = torch.get_num_threads()
    try:
        for n, (e_idx, f_idx) in enumerate(harmonizers):
            if on_progress is not None:
                on_progress(n / len(harmonizers), f"re-fitting harmonizer {n + 1}/{len(harmonizers)} (block {f_idx}) "
                            "after SRC")
            x_batches = _inputs_at(emulator, e_idx, boundary, cached, sequences, settings.batch_size)
            x = torch.cat(x_batches).float()
            y = targets.pop(f_idx)
            x_fit, y_fit = ordinary_tokens(x[:n_fit]), ordinary_tokens(y[:n_fit])
            x_check, y_check = ordinary_tokens(x[n_fit:]), ordinary_tokens(y[n_fit:])
            live = blocks[e_idx]
            assert isinstance(live, Harmonizer)
            work = copy.deepcopy(live).float()  # fitted in float32 whatever the emulator's dtype
            for p in work.parameters():
                p.requires_grad_(True)
            torch.set_num_threads(1)  # small matrices: one thread is as fast (as in the stage-1 regression)
            try:
                before[f_idx] = replacement_error(work, x_check, y_check)
                with torch.enable_grad():
                    fit_harmonizer(work, x_fit, y_fit, settings.steps, settings.lr, settings.batch_tokens,
                                   torch.Generator().manual_seed(seed * 1_000_003 + f_idx))
                work.eval()
                refitted = replacement_error(work, x_check, y_check)
            finally:
                torch.set_num_threads(threads)
            if refitted < before[f_idx]:
                dtype = next(live.parameters()).dtype
                with torch.no_grad():
                    for dst, src in zip(live.parameters(), work.parameters(), strict=True):
                        dst.copy_(src.to(dtype))
            after[f_idx] = min(refitted, before[f_idx])
            # The state leaving this harmonizer, computed as the emulator does (its dtype): the next one's start.
            with torch.no_grad():
                cached = [live(xb) for xb in x_batches]
            boundary = e_idx
    finally:
        emulator.train(was_training)
    if on_progress is not None:
        on_progress(1.0, f"re-fitted {len(harmonizers)} harmonizers after SRC")
    return RefitRecord(sequences=n_fit, check_sequences=settings.check_sequences, seq_len=settings.seq_len,
                       steps=settings.steps, lr=settings.lr, seed=seed, corpus=corpus, error_before=before,
                       error_after=after, seconds=round(time.perf_counter() - started, 1))
