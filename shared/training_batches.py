"""Tokenise (context, target) examples with loss on target tokens only, and batch them: the data owner tunes
its adapter on these batches, and the model owner measures an emulator's fidelity on the same shape of data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from shared.data_formats import TrainExample

IGNORE = -100


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The one padding id every batch uses: the tokenizer's pad token, else its EOS, else 0 (padding is masked
    out of attention and loss, so only its presence matters; a pad id of 0 is a real id, not a missing one)."""
    for token in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    return 0


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE on context tokens


def encode(tokenizer: PreTrainedTokenizerBase, example: TrainExample, max_len: int) -> Encoded:
    context = tokenizer(example.context, add_special_tokens=False)["input_ids"] if example.context else []
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        target = [*target, tokenizer.eos_token_id]  # teaches the tuned model where an answer ends
    target = target[:max_len]
    context = context[max(0, len(context) - (max_len - len(target))):]  # cut the context from the left
    return Encoded(input_ids=context + target, labels=[IGNORE] * len(context) + target)


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def batches(encoded: list[Encoded], batch_size: int, pad_id: int,
            generator: torch.Generator | None = None) -> list[dict[str, torch.Tensor]]:
    """Shuffled (when a generator is given) batches; similar lengths are not grouped, on purpose:
    the order stays a pure function of the seed."""
    order = torch.randperm(len(encoded), generator=generator).tolist() if generator else list(range(len(encoded)))
    return [collate([encoded[i] for i in order[s:s + batch_size]], pad_id) for s in range(0, len(order), batch_size)]
