"""Stage 1 of ScaleOT: Dynamic LayerReplace (learned layer importance + harmonizers).

The middle blocks of the frozen base model are wrapped in switches that run either the original
block or its harmonizer. Training alternates:
  DL step: sample one replacement mask from the policy, minimise next-token CE + lambda * nMSE
           (mixed vs original hidden state at the output of the middle part); only harmonizers learn.
  RL step: on held-out batches sample C masks, reward -loss, REINFORCE on the importance logits.
The policy replaces, in each group of g consecutive middle blocks, ceil(|group|/2) blocks sampled
without replacement with probabilities softmax(-s) (less important -> more likely replaced).
Under torchrun the same loop runs on every rank with a `ProcessGroupCollective` (distributed.py);
in one process its `Collective` is the identity.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model_owner_server.base_models import BaseModel
from model_owner_server.emulators.checkpoint import Stage1Checkpoint
from model_owner_server.emulators.distributed import Collective
from model_owner_server.emulators.profile import (
    CurvePoint,
    ImportanceProfile,
    ProfileMeta,
    Stage1Config,
    checkpoint_dir,
    corpus_tag,
    find_profile,
    profile_id,
    save_profile,
)
from model_owner_server.emulators.selection import middle_indices
from shared.blocks import activation_name, find_block_stack, set_block_stack, text_config
from shared.corpora import calibration_split
from shared.harmonizer import Harmonizer


@dataclass(frozen=True)
class Stage1Progress:
    step: int
    total: int
    loss: float
    reward: float


ProgressFn = Callable[[Stage1Progress], None]


class Stage1Cancelled(RuntimeError):
    """Raised when the caller's `should_stop` asks stage 1 to stop (a checkpoint is kept)."""


class _StopForward(Exception):
    """Ends a forward pass once the middle part's output is captured (the top is not needed)."""


class SwitchBlock(nn.Module):
    """An original block and its harmonizer; `replaced` picks which one runs."""

    def __init__(self, block: nn.Module, harmonizer: Harmonizer) -> None:
        super().__init__()
        self.block = block
        self.harmonizer = harmonizer
        self.replaced = False
        self.capture = False  # keep the output (last middle block only)
        self.stop_after = False
        self.captured: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        module = self.harmonizer if self.replaced else self.block
        out = module(hidden_states, *args, **kwargs)
        if self.capture:
            self.captured = out
            if self.stop_after:
                raise _StopForward
        return out


class MixedNetwork:
    """The base model with switchable middle blocks, plus the two losses of stage 1."""

    def __init__(self, base: BaseModel, config: Stage1Config, harmonizers: dict[int, Harmonizer],
                 comm: Collective | None = None) -> None:
        self.model = base.model
        self.config = config
        self.comm = comm or Collective()
        stack = find_block_stack(self.model)
        self.stack_path = stack.path
        self.original_blocks = stack.blocks
        self.middle = sorted(harmonizers)
        self.switches = {i: SwitchBlock(stack.blocks[i], harmonizers[i]) for i in self.middle}
        mixed = nn.ModuleList([self.switches.get(i, blk) for i, blk in enumerate(stack.blocks)])
        set_block_stack(self.model, stack.path, mixed)
        self.tap = self.switches[self.middle[-1]]
        self.tap.capture = True
        self.train_model = self.comm.wrap(self.model)  # DDP under torchrun: the DL step runs through it

    def restore(self) -> None:
        set_block_stack(self.model, self.stack_path, self.original_blocks)

    def _set_mask(self, replaced: set[int]) -> None:
        for i, switch in self.switches.items():
            switch.replaced = i in replaced

    @torch.no_grad()
    def original_middle_output(self, batch: torch.Tensor) -> torch.Tensor:
        self._set_mask(set())
        self.tap.stop_after = True
        try:
            self.model(input_ids=batch, use_cache=False)
        except _StopForward:
            pass
        finally:
            self.tap.stop_after = False
        assert self.tap.captured is not None
        return self.tap.captured.detach()

    def loss(self, batch: torch.Tensor, replaced: set[int], target_hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        self._set_mask(replaced)
        model = self.train_model if torch.is_grad_enabled() else self.model
        out = model(input_ids=batch, labels=batch, use_cache=False)
        mixed = self.tap.captured
        assert mixed is not None
        # normalised by the mean of target^2 over the global batch (all ranks), so the mean over ranks of
        # the per-rank nMSE is the nMSE of the global batch
        scale = self.comm.mean(target_hidden.pow(2).mean())
        nmse = (mixed - target_hidden).pow(2).mean() / scale.clamp_min(1e-8)
        return {"loss": out.loss + self.config.kd_weight * nmse, "ce": out.loss, "nmse": nmse}


def groups_of(n_middle: int, size: int) -> list[list[int]]:
    """Positions 0..n_middle-1 in consecutive groups of `size` (the last may be smaller)."""
    return [list(range(s, min(s + size, n_middle))) for s in range(0, n_middle, size)]


def sample_mask(
    scores: torch.Tensor, groups: list[list[int]], generator: torch.Generator
) -> tuple[list[int], torch.Tensor]:
    """Replace ceil(|g|/2) positions per group, without replacement, p ~ softmax(-s); log pi of it."""
    replaced: list[int] = []
    log_prob = scores.new_zeros(())
    for group in groups:
        remaining = list(group)
        for _ in range(math.ceil(len(group) / 2)):
            logits = -scores[remaining]
            probs = torch.softmax(logits.detach(), dim=0)
            j = int(torch.multinomial(probs, 1, generator=generator).item())
            log_prob = log_prob + torch.log_softmax(logits, dim=0)[j]
            replaced.append(remaining.pop(j))
    return sorted(replaced), log_prob


def token_stream(base: BaseModel, texts: list[str]) -> torch.Tensor:
    eos = base.tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(base.tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _batch(stream: torch.Tensor, config: Stage1Config, generator: torch.Generator) -> torch.Tensor:
    high = stream.numel() - config.seq_len
    if high <= 0:
        raise ValueError(f"calibration text has {stream.numel()} tokens; need more than seq_len={config.seq_len}")
    starts = torch.randint(0, high, (config.batch_size,), generator=generator)
    return torch.stack([stream[s : s + config.seq_len] for s in starts.tolist()])


def new_harmonizers(base: BaseModel, config: Stage1Config, middle: list[int]) -> dict[int, Harmonizer]:
    torch.manual_seed(config.seed)
    hcfg = config.harmonizer_config(activation_name(base.model.config))
    hidden = text_config(base.model.config).hidden_size
    blocks = find_block_stack(base.model).blocks
    return {i: Harmonizer.for_block(blocks[i], hidden, hcfg) for i in middle}


def run_stage1(
    base: BaseModel,
    config: Stage1Config,
    texts: list[str] | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    comm: Collective | None = None,
) -> ImportanceProfile:
    """Train importance logits and harmonizers; resumes from the last checkpoint of the same config.

    With a `ProcessGroupCollective` (torchrun), every rank runs this with the same arguments; only rank
    0 writes checkpoints and the profile, and only rank 0's `should_stop` and `on_progress` are used."""
    started = time.perf_counter()
    comm = comm or Collective()
    comm.check(config)
    num_layers = base.num_layers
    middle = middle_indices(num_layers, config.adapter_bottom, config.adapter_top)
    if not middle:
        raise ValueError(f"no middle blocks: {num_layers} blocks, adapter {config.adapter_bottom}+{config.adapter_top}")
    pid = profile_id(base.weights_sha256, config, corpus_tag(texts))
    train_texts = texts if texts is not None else calibration_split()[0]
    stream = token_stream(base, train_texts)
    split = int(stream.numel() * 0.95)  # the RL step scores masks on text the DL step never trains on
    dl_stream, rl_stream = stream[:split], stream[split:]

    for p in base.model.parameters():
        p.requires_grad_(False)
    harmonizers = {i: h.to(comm.device) for i, h in new_harmonizers(base, config, middle).items()}
    scores = torch.zeros(len(middle), requires_grad=True)
    h_params = [p for i in middle for p in harmonizers[i].parameters()]
    h_opt = torch.optim.AdamW(h_params, lr=config.lr, weight_decay=config.weight_decay)
    s_opt = torch.optim.Adam([scores], lr=config.score_lr)
    generator = torch.Generator().manual_seed(config.seed)
    groups = groups_of(len(middle), config.group_size)
    curve: list[CurvePoint] = []

    ckpt = Stage1Checkpoint(checkpoint_dir(pid))
    start_step = ckpt.restore(harmonizers, scores, h_opt, s_opt, generator, curve)

    net = MixedNetwork(base, config, harmonizers, comm)
    base.model.eval()
    try:
        for step in range(start_step, config.steps):
            if comm.agree(should_stop is not None and should_stop()):
                if comm.is_main:
                    ckpt.save(step, harmonizers, scores, h_opt, s_opt, generator, curve)
                comm.barrier()
                raise Stage1Cancelled(f"stage 1 stopped at step {step}; it resumes from there")
            # DL step: harmonizers learn under one sampled mask.
            batch = comm.shard(_batch(dl_stream, config, generator))
            positions, _ = sample_mask(scores, groups, generator)
            target = net.original_middle_output(batch)
            losses = net.loss(batch, {middle[p] for p in positions}, target)
            h_opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(h_params, 1.0)
            h_opt.step()
            # RL step: REINFORCE on the importance logits with C masks on a held-out batch.
            rl_batch = comm.shard(_batch(rl_stream, config, generator))
            rl_target = net.original_middle_output(rl_batch)
            rewards, log_probs = [], []
            for _ in range(config.rl_samples):
                positions, log_prob = sample_mask(scores, groups, generator)
                with torch.no_grad():
                    rewards.append(-net.loss(rl_batch, {middle[p] for p in positions}, rl_target)["loss"].item())
                log_probs.append(log_prob)
            reward = comm.mean(torch.tensor(rewards))  # every rank: the same rewards, the same update
            advantage = reward - reward.mean()
            s_opt.zero_grad(set_to_none=True)
            (-(advantage * torch.stack(log_probs)).sum()).backward()
            s_opt.step()

            loss, ce, nmse = comm.mean(torch.stack([losses["loss"], losses["ce"], losses["nmse"]]).detach()).tolist()
            point = CurvePoint(step=step + 1, loss=loss, ce=ce, nmse=nmse, reward=float(reward.mean()))
            curve.append(point)
            if on_progress is not None and comm.is_main:
                on_progress(Stage1Progress(step + 1, config.steps, point.loss, point.reward))
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps and comm.is_main:
                ckpt.save(step + 1, harmonizers, scores, h_opt, s_opt, generator, curve)
    finally:
        net.restore()

    hcfg = harmonizers[middle[0]].config  # the config new_harmonizers built them with
    meta = ProfileMeta(
        profile_id=pid,
        base_model=base.name,
        base_model_sha256=base.weights_sha256,
        config=config,
        corpus=corpus_tag(texts),
        harmonizer=hcfg,
        middle=middle,
        importance=[float(x) for x in scores.detach()],
        curve=curve,
        wall_seconds=time.perf_counter() - started,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    tensors = {
        f"{i}.{k}": v.detach().to("cpu", copy=True) for i in middle for k, v in harmonizers[i].state_dict().items()
    }
    profile = ImportanceProfile(meta, tensors)
    if comm.is_main:
        save_profile(profile)
        ckpt.clear()
    comm.barrier()  # the other ranks return once the profile is in the cache
    return profile


def ensure_profile(
    base: BaseModel,
    config: Stage1Config,
    texts: list[str] | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportanceProfile:
    """The cached profile for (base weights, config, corpus), running stage 1 first if it is missing."""
    cached = find_profile(profile_id(base.weights_sha256, config, corpus_tag(texts)))
    if cached is not None:
        return cached
    return run_stage1(base, config, texts=texts, on_progress=on_progress, should_stop=should_stop)
