"""Stage 1 of ScaleOT: Dynamic LayerReplace (learned layer importance + harmonizers).

1. Initialisation (training-free, stage1_init.py): every harmonizer is fitted by regression to
   imitate its block on cached calibration activations; the importance logits start from how well
   that worked (block influence is recorded as the baseline).
2. T alternating steps on the mixed network (middle blocks wrapped in switches that run either the
   original block or its harmonizer):
   DL step: the mask stage 2 would deploy for one of the served alphas (the k least important
            blocks, nested across alphas); minimise next-token CE + lambda * per-token normalised
            MSE of the middle output on ordinary tokens; only harmonizers learn.
   RL step: on a held-out batch sample C masks of the same size k (Plackett-Luce, softmax(-s)),
            reward -loss, REINFORCE on the importance logits.
Under torchrun the same loop runs on every rank with a `ProcessGroupCollective` (distributed.py);
in one process its `Collective` is the identity.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.calibration import ordinary_tokens, relative_error, sample_sequences
from model_owner_server.emulators.checkpoint import Stage1Checkpoint
from model_owner_server.emulators.distributed import Collective
from model_owner_server.emulators.policy import deployed_mask, sample_mask, served_sizes
from model_owner_server.emulators.profile import (
    CurvePoint,
    ImportanceProfile,
    ProfileMeta,
    Stage1Config,
    checkpoint_dir,
    corpus_tag,
    profile_id,
    save_profile,
)
from model_owner_server.emulators.selection import middle_indices
from model_owner_server.emulators.stage1_init import initialise
from shared.blocks import activation_name, find_block_stack, set_block_stack, text_config
from shared.corpora import calibration_split
from shared.harmonizer import Harmonizer
from shared.perplexity import token_stream as shared_token_stream
from shared.precision import fp32_master


@dataclass(frozen=True)
class Stage1Progress:
    step: int
    total: int
    loss: float
    reward: float
    # "initialisation" (activations cached, harmonizers fitted by regression: minutes, no steps) or
    # "training steps"; a job names it in its status, and estimates count step time only
    phase: str = "training steps"


INITIALISATION = "initialisation"


ProgressFn = Callable[[Stage1Progress], None]


class Stage1Cancelled(RuntimeError):
    """Raised when the caller's `should_stop` asks stage 1 to stop (a checkpoint is kept)."""


class _StopForward(Exception):
    """Ends a forward pass once the middle part's output is captured (the top is not needed)."""


@dataclass(frozen=True)
class Targets:
    """What the original network gives a batch: the middle output, and next-token log-probabilities
    when the logit KD term is on."""

    hidden: torch.Tensor
    log_probs: torch.Tensor | None


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
        self.perturbation: torch.Tensor | None = None  # added to the input (first middle block only)
        self.seen_input: torch.Tensor | None = None  # the last unperturbed input (first middle block only)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.perturbation is not None:
            hidden_states = hidden_states + self.perturbation
        else:
            self.seen_input = hidden_states.detach()
        module = self.harmonizer if self.replaced else self.block
        out = module(hidden_states, *args, **kwargs)
        if self.capture:
            self.captured = out
            if self.stop_after:
                raise _StopForward
        return out


class MixedNetwork:
    """The base model with switchable middle blocks, plus the two losses of stage 1."""

    def __init__(self, base: LoadedBase, config: Stage1Config, harmonizers: dict[int, Harmonizer],
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
        self.entry = self.switches[self.middle[0]]
        self.train_model = self.comm.wrap(self.model)  # DDP under torchrun: the DL step runs through it

    def restore(self) -> None:
        set_block_stack(self.model, self.stack_path, self.original_blocks)

    def _set_mask(self, replaced: set[int]) -> None:
        for i, switch in self.switches.items():
            switch.replaced = i in replaced

    def _middle_output(self, batch: torch.Tensor) -> torch.Tensor:
        self.tap.stop_after = True
        try:
            self.model(input_ids=batch, use_cache=False)
        except _StopForward:
            pass
        finally:
            self.tap.stop_after = False
        assert self.tap.captured is not None
        return self.tap.captured

    @torch.no_grad()
    def original_middle_output(self, batch: torch.Tensor) -> torch.Tensor:
        self._set_mask(set())
        return self._middle_output(batch).detach()

    @torch.no_grad()
    def original_outputs(self, batch: torch.Tensor) -> Targets:
        """The original network's middle output and, when the logit KD term is on, its next-token
        log-probabilities (one whole forward instead of one stopped after the middle)."""
        if not self.config.logit_kd_weight:
            return Targets(self.original_middle_output(batch), None)
        self._set_mask(set())
        logits = self.model(input_ids=batch, use_cache=False).logits
        assert self.tap.captured is not None
        return Targets(self.tap.captured.detach(), torch.log_softmax(logits.float(), dim=-1))

    def perturbation(self, eps: float, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise of norm eps * ||x_t|| per token for the middle input x seen last (none at position 0)."""
        x = self.entry.seen_input
        assert x is not None
        noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        noise = noise * (eps * x.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        noise[:, 0] = 0
        return noise

    def jacobian_error(self, batch: torch.Tensor, replaced: set[int], delta: torch.Tensor, mixed: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
        """How differently the mixed and the original middle respond to the same input perturbation:
        per-token error of (mixed(x + d) - mixed(x)) against (original(x + d) - original(x)).
        Matching responses in random directions matches the middle part's Jacobian, through which
        the bottom adapter's gradient flows (forward KD alone leaves it free)."""
        self.entry.perturbation = delta
        try:
            with torch.no_grad():
                self._set_mask(set())
                target_moved = self._middle_output(batch).detach()
            self._set_mask(replaced)
            mixed_moved = self._middle_output(batch)
        finally:
            self.entry.perturbation = None
        return relative_error(ordinary_tokens(mixed_moved - mixed), ordinary_tokens(target_moved - target))

    def loss(self, batch: torch.Tensor, replaced: set[int], targets: Targets,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """CE + lambda * nMSE (+ logit_kd_weight * KL(full || mixed) per token) (+ jac_weight * Jacobian
        error when a generator for the perturbation is given)."""
        target_hidden = targets.hidden
        self._set_mask(replaced)
        model = self.train_model if torch.is_grad_enabled() else self.model
        out = model(input_ids=batch, labels=batch, use_cache=False)
        mixed = self.tap.captured
        assert mixed is not None
        # per token, ordinary tokens only: a whole-tensor normaliser is dominated by the attention sink's few
        # massive dimensions. Every rank has as many tokens, so the mean over ranks is the global mean.
        nmse = relative_error(ordinary_tokens(mixed), ordinary_tokens(target_hidden))
        losses = {"loss": out.loss + self.config.kd_weight * nmse, "ce": out.loss, "nmse": nmse, "jac": nmse * 0}
        if targets.log_probs is not None:
            log_probs = torch.log_softmax(out.logits.float(), dim=-1).flatten(0, 1)
            kl = torch.nn.functional.kl_div(log_probs, targets.log_probs.flatten(0, 1), log_target=True,
                                            reduction="batchmean")
            losses["loss"] = losses["loss"] + self.config.logit_kd_weight * kl
        if generator is not None and self.config.jac_weight > 0:
            delta = self.perturbation(self.config.jac_eps, generator)
            losses["jac"] = self.jacobian_error(batch, replaced, delta, mixed, target_hidden)
            losses["loss"] = losses["loss"] + self.config.jac_weight * losses["jac"]
        return losses


def base_profile_id(base: LoadedBase, config: Stage1Config, texts: list[str] | None = None) -> str:
    """The profile id of stage 1 on this loaded base: its weights, its dtype, and the calibration text
    (None: the built-in corpus). Every lookup, lock and checkpoint of a profile goes through it."""
    return profile_id(base.weights_sha256, config, corpus_tag(texts), base.dtype)


def token_stream(base: LoadedBase, texts: list[str]) -> torch.Tensor:
    """The calibration texts as one EOS-separated token stream of the base model's tokenizer."""
    return shared_token_stream(base.tokenizer, texts)


def new_harmonizers(base: LoadedBase, config: Stage1Config, middle: list[int]) -> dict[int, Harmonizer]:
    """Float32 harmonizers whatever the base's dtype (fp32 master weights; `fp32_master` casts at their
    boundary), initialised the same way over a float32 or a half-precision base."""
    torch.manual_seed(config.seed)
    hcfg = config.harmonizer_config(activation_name(base.model.config))
    hidden = text_config(base.model.config).hidden_size
    blocks = find_block_stack(base.model).blocks
    harmonizers = {i: Harmonizer.for_block(blocks[i], hidden, hcfg, dtype=torch.float32) for i in middle}
    for harmonizer in harmonizers.values():
        fp32_master(harmonizer)
    return harmonizers


def run_stage1(
    base: LoadedBase,
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
    pid = base_profile_id(base, config, texts)
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
    sizes = served_sizes(len(middle), config.served_alphas) or [1]
    curve: list[CurvePoint] = []

    ckpt = Stage1Checkpoint(checkpoint_dir(pid))
    start_step = ckpt.restore(harmonizers, scores, h_opt, s_opt, generator, curve)
    init = ckpt.restore_init()
    comm.barrier()  # every rank has read the checkpoint before rank 0 may write the initialised one
    if init is None:  # a fresh run (a checkpoint already holds the initialised state)
        if on_progress is not None and comm.is_main:
            on_progress(Stage1Progress(0, config.steps, float("nan"), float("nan"), INITIALISATION))
        init = initialise(base, config, middle, harmonizers, dl_stream, rl_stream)
        with torch.no_grad():  # ranks agree on the start (DDP broadcasts rank 0's harmonizers)
            scores.copy_(comm.mean(torch.tensor(init.importance)))
        if comm.is_main:
            ckpt.save(0, harmonizers, scores, h_opt, s_opt, generator, curve, init)

    net = MixedNetwork(base, config, harmonizers, comm)
    base.model.eval()
    try:
        for step in range(start_step, config.steps):
            if comm.agree(should_stop is not None and should_stop()):
                if comm.is_main:
                    ckpt.save(step, harmonizers, scores, h_opt, s_opt, generator, curve, init)
                comm.barrier()
                raise Stage1Cancelled(f"stage 1 stopped at step {step}; it resumes from there")
            k = sizes[step % len(sizes)]
            # DL step: harmonizers learn under the mask stage 2 deploys for this k.
            batch = comm.shard(sample_sequences(dl_stream, config.batch_size, config.seq_len, generator))
            positions = deployed_mask(scores.detach(), k)
            target = net.original_outputs(batch)
            losses = net.loss(batch, {middle[p] for p in positions}, target, generator)
            h_opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(h_params, 1.0)
            h_opt.step()
            # RL step: REINFORCE on the importance logits with C masks of size k on a held-out batch.
            rl_batch = comm.shard(sample_sequences(rl_stream, config.batch_size, config.seq_len, generator))
            rl_target = net.original_outputs(rl_batch)
            rewards, log_probs = [], []
            for _ in range(config.rl_samples):
                sampled, log_prob = sample_mask(scores, k, generator)
                with torch.no_grad():
                    rewards.append(-net.loss(rl_batch, {middle[p] for p in sampled}, rl_target)["loss"].item())
                log_probs.append(log_prob)
            reward = comm.mean(torch.tensor(rewards))  # every rank: the same rewards, the same update
            advantage = reward - reward.mean()
            s_opt.zero_grad(set_to_none=True)
            (-(advantage * torch.stack(log_probs)).sum()).backward()
            s_opt.step()

            logged = torch.stack([losses["loss"], losses["ce"], losses["nmse"], losses["jac"]]).detach()
            loss, ce, nmse, jac = comm.mean(logged).tolist()
            point = CurvePoint(step=step + 1, loss=loss, ce=ce, nmse=nmse, reward=float(reward.mean()), replaced=k,
                               jac=jac)
            curve.append(point)
            if on_progress is not None and comm.is_main:
                on_progress(Stage1Progress(step + 1, config.steps, point.loss, point.reward))
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps and comm.is_main:
                ckpt.save(step + 1, harmonizers, scores, h_opt, s_opt, generator, curve, init)
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
        init=init,
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
