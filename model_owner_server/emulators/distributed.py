"""The collectives stage 1 needs, for one process (identity) or a torch.distributed process group.

`run_stage1` calls the same few methods either way, so the single-process path is unchanged:
every `Collective` method is the identity there. Under `torchrun` (`ProcessGroupCollective`):
  - all ranks draw from the same seeded generator, so they sample the same masks and the same
    global batch; `shard` keeps rows rank::world of it (batch_size must divide by the world size);
  - the model is wrapped in DistributedDataParallel (only harmonizer parameters require grad;
    find_unused_parameters because the harmonizers of kept blocks do not run), so the harmonizer
    gradients are averaged over ranks;
  - `mean` all-reduces small tensors (RL rewards, the nMSE normaliser, the logged losses), so the
    REINFORCE update of the importance logits is the same on every rank;
  - `agree` broadcasts rank 0's decision (stop now? profile already cached?), so every rank leaves
    the training loop at the same step and no collective is left waiting.
See docs/method-notes.md for what is exactly and what is only approximately equivalent.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from model_owner_server.emulators.profile import Stage1Config


def check_world(config: Stage1Config, world: int) -> None:
    """The global batch is split evenly over the ranks; refuse a split that would change it."""
    if world < 1:
        raise ValueError(f"the number of stage-1 processes must be >= 1, not {world}")
    if config.batch_size % world:
        raise ValueError(
            f"stage-1 batch_size {config.batch_size} is not divisible by {world} processes: every rank takes "
            f"batch_size / nproc rows of the same global batch; choose a batch_size that is a multiple of {world}"
        )


class Collective:
    """One process: every collective is the identity (run_stage1 stays bit-identical)."""

    rank = 0
    world = 1
    device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check(self, config: Stage1Config) -> None:
        check_world(config, self.world)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of the global batch, on this rank's device."""
        return batch

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of `value` over the ranks (a new tensor without grad, on `value`'s device)."""
        return value

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank."""
        return flag

    def barrier(self) -> None:
        pass

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to run the training forward pass through (DDP under torchrun)."""
        return model


class ProcessGroupCollective(Collective):
    """The default torch.distributed process group (gloo on CPU, nccl on CUDA), one device per rank."""

    def __init__(self, device: str = "cpu") -> None:
        if not dist.is_initialized():
            raise RuntimeError("ProcessGroupCollective needs torch.distributed.init_process_group() first")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        if device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", self.rank))
            if torch.cuda.device_count() <= local:
                raise RuntimeError(f"rank {self.rank} needs cuda:{local} but {torch.cuda.device_count()} GPU(s) "
                                   "are visible; use fewer processes or --device cpu")
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        elif device == "cpu":
            self.device = torch.device("cpu")
        else:
            raise ValueError(f"device must be cpu or cuda, not {device!r}")

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[self.rank :: self.world].to(self.device)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        reduced = value.detach().to(self.device, copy=True)
        dist.all_reduce(reduced)
        return reduced.div_(self.world).to(value.device)

    def agree(self, flag: bool) -> bool:
        decision = torch.tensor([1 if (flag and self.is_main) else 0], device=self.device)
        dist.broadcast(decision, src=0)
        return bool(decision.item())

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True,  # the harmonizers of the blocks kept by this step's mask
            forward_sync_buffers=False,  # the buffers (rotary tables) are equal and never change
        )
