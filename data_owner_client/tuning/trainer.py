"""Tune chosen decoder blocks of a causal LM (an emulator's adapter, or the full model's for the
upper bound) on (context, target) examples: AdamW, warmup + cosine/linear schedule, clipping,
seeded, validation each epoch with best-checkpoint selection."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.recipe import Optimisation, seeded_generator
from shared.blocks import find_block_stack
from shared.data_formats import TrainExample
from shared.low_rank import is_projection
from shared.precision import fp32_master
from shared.training_batches import IGNORE, Encoded, batches, encode, pad_token_id


@dataclass(frozen=True)
class TuningProgress:
    step: int
    total: int
    epoch: int
    loss: float


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    valid_loss: float | None
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TuningResult:
    model: PreTrainedModel | PeftModel  # holds the best weights
    state: dict[str, torch.Tensor]  # full mode: tuned block parameters (model's own key names)
    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    steps: int = 0

    @property
    def tokens_per_second(self) -> float:
        tokens = sum(e.tokens for e in self.epochs)
        seconds = sum(e.seconds for e in self.epochs)
        return tokens / seconds if seconds > 0 else 0.0


def lora_targets(block: torch.nn.Module) -> list[str]:
    """Leaf names of the linear projections in a block (q_proj, ..., or c_attn, ... for GPT-2)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in block.named_modules() if name and is_projection(m)})


def _trainable(model: PreTrainedModel, blocks: list[int], config: TuningConfig
               ) -> tuple[PreTrainedModel | PeftModel, list[Callable[[], None]]]:
    """The network to train, and the undos of the float32 master copies it put in (full mode).

    Full mode trains the blocks in float32 inside a model of any dtype (`fp32_master`); LoRA's
    matrices are float32 already (PEFT creates them so over a half-precision base)."""
    for p in model.parameters():
        p.requires_grad_(False)
    stack = find_block_stack(model)
    if config.mode == "full":
        undos = [fp32_master(stack.blocks[i]) for i in blocks]
        for i in blocks:
            for p in stack.blocks[i].parameters():
                p.requires_grad_(True)
        return model, undos
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=lora_targets(stack.blocks[blocks[0]]), layers_to_transform=list(blocks),
        layers_pattern=stack.path.rsplit(".", 1)[-1], bias="none", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), []


@torch.no_grad()
def mean_target_loss(model: torch.nn.Module, encoded: list[Encoded], batch_size: int, pad_id: int) -> float:
    """Token-weighted mean CE over target tokens."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches(encoded, batch_size, pad_id):
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        if n:
            total += float(model(**batch).loss) * n
            count += n
    model.train(was_training)
    return total / max(1, count)


def tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    blocks: list[int],
    train: list[TrainExample],
    valid: list[TrainExample] | None,
    config: TuningConfig,
    on_progress: Callable[[TuningProgress], None] | None = None,
) -> TuningResult:
    if not train:
        raise ValueError("no training examples")
    if not blocks:
        raise ValueError("no blocks to tune")
    generator = seeded_generator(config.seed)
    pad_id = pad_token_id(tokenizer)
    train_enc = [encode(tokenizer, e, config.max_len) for e in train]
    valid_enc = [encode(tokenizer, e, config.max_len) for e in valid] if valid else []

    net, undos = _trainable(model, blocks, config)
    opt = Optimisation.over([p for p in net.parameters() if p.requires_grad], config, len(train_enc))

    result = TuningResult(model=net, state={})
    best_loss = math.inf
    best: dict[str, torch.Tensor] = {}
    for epoch in range(1, config.epochs + 1):
        if opt.done:
            break
        net.train()
        started, tokens, loss_sum, micro = time.perf_counter(), 0, 0.0, 0
        opt.optimizer.zero_grad(set_to_none=True)
        for batch in batches(train_enc, config.batch_size, pad_id, generator):
            loss = net(**batch).loss
            (loss / config.grad_accum).backward()
            tokens += int(batch["attention_mask"].sum())
            loss_sum += float(loss.detach())
            micro += 1
            if opt.after_backward(micro):
                if on_progress is not None:
                    on_progress(TuningProgress(opt.step, opt.total, epoch, float(loss.detach())))
                if opt.done:
                    break
        seconds = time.perf_counter() - started
        valid_loss = mean_target_loss(net, valid_enc, config.batch_size, pad_id) if valid_enc else None
        result.epochs.append(EpochLog(epoch, loss_sum / max(1, micro), valid_loss, tokens, seconds))
        score = valid_loss if valid_loss is not None else -epoch  # no validation: keep the last epoch
        if score < best_loss:
            best_loss, result.best_epoch = score, epoch
            best = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    with torch.no_grad():  # restore the best epoch's weights
        named = dict(net.named_parameters())
        for name, value in best.items():
            named[name].copy_(value)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for undo in undos:  # the returned model is in one dtype again; the adapter keeps the float32 masters
        undo()
    result.state = best if config.mode == "full" else {}
    result.steps = opt.step
    return result
