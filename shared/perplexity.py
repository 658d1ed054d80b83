"""Perplexity over fixed, non-overlapping token windows (the language-modelling metric)."""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def token_stream(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> torch.Tensor:
    """The texts tokenized without special tokens, each followed by EOS (if the tokenizer has one),
    concatenated into one 1-D long tensor."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def fixed_windows(tokenizer: PreTrainedTokenizerBase, texts: list[str], window: int, n_windows: int) -> torch.Tensor:
    """`n_windows` windows of `window` tokens at evenly spaced offsets of the joined texts."""
    ids = token_stream(tokenizer, texts)
    total = ids.numel() // window
    if total == 0:
        raise ValueError(f"text has {ids.numel()} tokens, fewer than one window of {window}")
    n = min(n_windows, total)
    picks = sorted({round(i * (total - 1) / max(1, n - 1)) for i in range(n)})
    stream = ids[: total * window].view(total, window)
    return stream[picks]


@torch.no_grad()
def perplexity(model: PreTrainedModel, windows: torch.Tensor, batch_size: int = 8) -> float:
    """exp(mean next-token NLL) over every predicted token of every window."""
    model.eval()
    nll, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        targets = batch[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        nll += loss.item()
        count += targets.numel()
    return math.exp(nll / count)
