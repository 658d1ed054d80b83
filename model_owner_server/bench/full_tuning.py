"""The paper's full fine-tuning row: EVERY parameter of the full model tuned (embeddings, all blocks,
final norm, head), with the data owner's recipe otherwise (same batches, AdamW, warmup + schedule,
clipping, seed). The adapter-only upper bound uses the data owner's own `tune` on the full model."""

from __future__ import annotations

import copy
import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from data_owner_client.tuning.batches import batches, encode
from data_owner_client.tuning.config import TuningConfig
from shared.data_formats import TrainExample


def tune_all_parameters(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, train: list[TrainExample],
                        config: TuningConfig) -> PreTrainedModel:
    """Tune `model` in place (all parameters) for `config.epochs` epochs; returns it in eval mode."""
    if not train:
        raise ValueError("no training examples")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = [encode(tokenizer, e, config.max_len) for e in train]
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    micro_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = math.ceil(micro_per_epoch / config.grad_accum) * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    scheduler = get_scheduler(config.schedule, optimizer, num_warmup_steps=round(config.warmup_ratio * total),
                              num_training_steps=total)
    model.train()
    step = 0
    for _ in range(config.epochs):
        optimizer.zero_grad(set_to_none=True)
        for micro, batch in enumerate(batches(encoded, config.batch_size, pad_id, generator), start=1):
            (model(**batch).loss / config.grad_accum).backward()
            if micro % config.grad_accum == 0 or micro == micro_per_epoch:
                torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step >= total:
                    break
        if step >= total:
            break
    for p in params:
        p.requires_grad_(False)
    return model.eval()


def tuned_copy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, kind: str, adapter_blocks: list[int],
               train: list[TrainExample], config: TuningConfig) -> PreTrainedModel:
    """A tuned copy of the full model: `adapter` (only the adapter blocks, the data owner's `tune`) or
    `full_parameter` (every parameter). The original model is left untouched."""
    from data_owner_client.tuning.trainer import tune

    copy_ = copy.deepcopy(model)
    if kind == "adapter":
        result = tune(copy_, tokenizer, adapter_blocks, train, None, config)
        assert isinstance(result.model, PreTrainedModel)  # full mode tunes the model itself, no PEFT wrapper
        return result.model
    if kind == "full_parameter":
        return tune_all_parameters(copy_, tokenizer, train, config)
    raise ValueError(f"unknown tuning kind {kind!r}: adapter or full_parameter")
