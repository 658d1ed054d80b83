"""Cached hidden states of the middle blocks on calibration text, and what they tell without training.

Stage 1 needs, for every middle block, the hidden state that enters it and the one that leaves it
on ordinary text: to rank blocks by how little they change the residual stream ("block influence",
1 - cosine of input and output) and to fit each harmonizer by regression from its block's input to
its output. One no-grad forward of the frozen model over the calibration sequences gives all of it.

Position 0 is left out of every statistic: in models with an attention sink (SmolLM2, Llama, ...)
the first token carries a few massive dimensions (on SmolLM2 ~90% of the middle output's energy)
that would otherwise decide every loss and ranking.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shared.blocks import find_block_stack


@dataclass(frozen=True)
class MiddleActivations:
    """states[j]: input of middle block middle[j] (N, T, H); states[-1]: output of the last one."""

    middle: list[int]
    states: list[torch.Tensor]

    def block_io(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.states[j], self.states[j + 1]

    @property
    def n_tokens(self) -> int:
        n, t, _ = self.states[0].shape
        return n * (t - 1)


def sample_sequences(stream: torch.Tensor, n: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """(n, seq_len) windows of the token stream at seeded random offsets."""
    high = stream.numel() - seq_len
    if high <= 0:
        raise ValueError(f"calibration text has {stream.numel()} tokens; need more than seq_len={seq_len}")
    starts = torch.randint(0, high, (n,), generator=generator)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def ordinary_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, T, H) -> (N * (T - 1), H): every position but the first (the attention sink)."""
    return x[:, 1:].reshape(-1, x.shape[-1])


@torch.no_grad()
def capture_middle(model: nn.Module, middle: list[int], sequences: torch.Tensor,
                   batch_size: int = 8) -> MiddleActivations:
    """Run the frozen model over `sequences` (N, T) and keep the hidden states around `middle`."""
    blocks = find_block_stack(model).blocks
    wanted = {i: j for j, i in enumerate(middle)}
    chunks: list[list[torch.Tensor]] = [[] for _ in range(len(middle) + 1)]

    def hook_for(j: int, last: bool) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            chunks[j].append(hidden.detach().float().clone())
            if last:
                out = output[0] if isinstance(output, tuple) else output
                chunks[j + 1].append(out.detach().float().clone())
        return hook

    handles = [blocks[i].register_forward_hook(hook_for(j, i == middle[-1]), with_kwargs=True)
               for i, j in wanted.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, sequences.shape[0], batch_size):
            model(input_ids=sequences[start : start + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return MiddleActivations(middle=list(middle), states=[torch.cat(c) for c in chunks])


def block_influence(acts: MiddleActivations) -> list[float]:
    """1 - cosine(input, output) per middle block, averaged over ordinary tokens (high = important)."""
    result = []
    for j in range(len(acts.middle)):
        x, y = (ordinary_tokens(t) for t in acts.block_io(j))
        result.append(float(1 - torch.nn.functional.cosine_similarity(x, y, dim=-1).mean()))
    return result


class _Stop(Exception):
    """Ends a forward once the wanted hidden state is captured (nothing above it is needed)."""


def top_adapter_input(model: nn.Module, a_top: int, input_ids: torch.Tensor) -> torch.Tensor:
    """The hidden state entering the first top-adapter block (or leaving the last block if a_top = 0),
    as the model computes it; the forward stops there. Gradients follow the caller's mode: stage-1 KD
    measurements call it under no_grad, the OT-KD distillation trains through it."""
    blocks = find_block_stack(model).blocks
    seen: list[torch.Tensor] = []
    if a_top > 0:
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop
        handle = blocks[len(blocks) - a_top].register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(_m: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
            seen.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop
        handle = blocks[-1].register_forward_hook(post)
    try:
        with contextlib.suppress(_Stop):
            model(input_ids=input_ids, use_cache=False)
    finally:
        handle.remove()
    return seen[0]


def relative_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-token normalised squared error ||p - t||^2 / ||t||^2, averaged over tokens (a scalar), in
    float32 whatever the inputs' dtype (a half-precision sum of squares loses the small errors)."""
    predicted, target = predicted.float(), target.float()
    num = (predicted - target).pow(2).sum(-1)
    den = target.pow(2).sum(-1).clamp_min(1e-6)
    return (num / den).mean()
