"""The paper's full fine-tuning row: EVERY parameter of the full model tuned (embeddings, all blocks,
final norm, head), with the data owner's recipe otherwise (same batches, AdamW, warmup + schedule,
clipping, seed). The adapter-only upper bound uses the data owner's own `tune` on the full model."""

from __future__ import annotations

import copy

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.recipe import Optimisation, seeded_generator
from shared.data_formats import TrainExample
from shared.training_batches import batches, encode, pad_token_id


def tune_all_parameters(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, train: list[TrainExample],
                        config: TuningConfig) -> PreTrainedModel:
    """Tune `model` in place (all parameters) for `config.epochs` epochs; returns it in eval mode."""
    if not train:
        raise ValueError("no training examples")
    generator = seeded_generator(config.seed)
    pad_id = pad_token_id(tokenizer)
    encoded = [encode(tokenizer, e, config.max_len) for e in train]
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = Optimisation.over(params, config, len(encoded))
    model.train()
    for _ in range(config.epochs):
        opt.optimizer.zero_grad(set_to_none=True)
        for micro, batch in enumerate(batches(encoded, config.batch_size, pad_id, generator), start=1):
            (model(**batch).loss / config.grad_accum).backward()
            if opt.after_backward(micro) and opt.done:
                break
        if opt.done:
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
