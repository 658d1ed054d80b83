"""The data owner's optimisation recipe, apart from what is tuned: seeding, AdamW with warmup and a
cosine/linear schedule, gradient accumulation and clipping. `tune` runs it on the adapter blocks and the
benchmark's full-parameter row on every parameter, so the two rows differ only in what is tuned."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import get_scheduler

from data_owner_client.tuning.config import TuningConfig


def seeded_generator(seed: int) -> torch.Generator:
    """Seeds torch (LoRA's initialisation, dropout) and returns the generator of the batch order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class Optimisation:
    """AdamW over `params`, one optimiser step every `grad_accum` micro-batches and at each epoch's end,
    warmup + schedule over `total` steps (all epochs, capped by `max_steps`)."""

    params: list[torch.nn.Parameter]
    config: TuningConfig
    micro_per_epoch: int
    total: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0

    @classmethod
    def over(cls, params: list[torch.nn.Parameter], config: TuningConfig, n_examples: int) -> Optimisation:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        micro_per_epoch = math.ceil(n_examples / config.batch_size)
        total = math.ceil(micro_per_epoch / config.grad_accum) * config.epochs
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        scheduler = get_scheduler(config.schedule, optimizer, num_warmup_steps=round(config.warmup_ratio * total),
                                  num_training_steps=total)
        return cls(params, config, micro_per_epoch, total, optimizer, scheduler)

    def after_backward(self, micro: int) -> bool:
        """Clip and step when micro-batch `micro` (from 1 in each epoch) ends an accumulation; True if it did."""
        if micro % self.config.grad_accum != 0 and micro != self.micro_per_epoch:
            return False
        torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return True

    @property
    def done(self) -> bool:
        return self.step >= self.total
