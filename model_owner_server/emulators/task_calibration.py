"""Task calibration: refine a built emulator's harmonizers on a data owner's unlabelled prompts.

Stage 1 fits the harmonizers on public prose. On a task whose prompts look nothing like it (a long
list of intents, say), an emulator can answer the prompts unlike the full model, and an adapter tuned
on it then corrects the emulator's answer prior instead of the full model's. This step aligns the
emulator with the full model on the task's own prompts, without labels:

- data: each prompt's context, followed (when it has choices) by one of its choices drawn at random,
  tokenised as the multiple-choice scoring does;
- loss: logit KD, KL(full || emulator) of the next-token distribution at every position, plus
  `answer_weight` times the same on the positions that predict the choice tokens (the part the
  zero-shot answer is read from);
- parameters: the harmonizers only (float32 master copies over an emulator of any dtype); every
  original block, the embeddings and the head stay as they are;
- a held-out share of the prompts decides: the refined harmonizers are kept only if they lower the
  KL on those prompts, so the step never makes the emulator worse by its own measure.

Cost: per step one full-model forward without gradients and one emulator forward and backward on
`batch_size` prompts: minutes on 2 CPU cores for a 135M model, not a new stage 1.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import PreTrainedTokenizerBase

from shared.blocks import find_block_stack
from shared.data_formats import Prompt
from shared.harmonizer import Harmonizer
from shared.manifest import CalibrationRecord, LayerEntry, LayerKind
from shared.scoring import continuation_pair, encode_request
from shared.training_batches import pad_token_id

CalibrationProgress = Callable[[float, str], None]  # (fraction done, message)
ShouldStop = Callable[[], bool]


class CalibrationCancelled(RuntimeError):
    """The caller's `should_stop` asked the calibration to stop (the emulator is left as it was)."""


class CalibrationSettings(BaseModel):
    """Bounded so a calibration stays within minutes on 2 CPU cores for a 135M model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(120, ge=1, le=5000)
    batch_size: int = Field(8, ge=1, le=256)
    max_len: int = Field(256, ge=8, le=8192, description="tokens per prompt (context cut from the left)")
    lr: float = Field(5e-4, gt=0, lt=1)
    answer_weight: float = Field(4.0, ge=0, description="extra KL weight on the positions predicting the choice")
    check_share: float = Field(0.2, gt=0, lt=1, description="share of the prompts held out to accept the result")
    seed: int = Field(0, ge=0)


def prompt_set_sha256(prompts: Sequence[Prompt]) -> str:
    """A stable hash of a prompt set (order included): part of a calibrated emulator's id."""
    rows = [{"context": p.context, "choices": list(p.choices)} for p in prompts]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def calibrated_emulator_id(emulator_id: str, prompts_sha256: str) -> str:
    """The id of an emulator calibrated on a prompt set: its uncalibrated id and the prompt set's hash."""
    return f"emu-{hashlib.sha256(f'{emulator_id}:{prompts_sha256}'.encode()).hexdigest()[:20]}"


@dataclass(frozen=True)
class _Sequence:
    ids: list[int]
    answer_from: int  # first position whose next-token prediction is a choice token (len(ids) if none)


def _sequence(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, max_len: int,
              generator: torch.Generator) -> _Sequence:
    if prompt.choices:
        choice = prompt.choices[int(torch.randint(len(prompt.choices), (1,), generator=generator))]
        context, continuation = encode_request(tokenizer, *continuation_pair(prompt.context, choice))
    else:
        context, continuation = list(tokenizer(prompt.context, add_special_tokens=False)["input_ids"]), []
    continuation = continuation[: max_len - 1]
    context = context[max(0, len(context) - (max_len - len(continuation))):]
    ids = context + continuation
    return _Sequence(ids, len(context) - 1 if continuation else len(ids))


def _batch(seqs: list[_Sequence], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, answer mask) right-padded; the masks mark real and answer positions
    (the last real position predicts nothing and is left out of both)."""
    width = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    answer = torch.zeros((len(seqs), width), dtype=torch.bool)
    for row, s in enumerate(seqs):
        ids[row, : len(s.ids)] = torch.tensor(s.ids)
        mask[row, : len(s.ids)] = 1
        answer[row, s.answer_from : len(s.ids) - 1] = True
    return ids, mask, answer


def _kl_terms(full: nn.Module, emulator: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
              answer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-token KL over every predicting position, mean over the answer positions)."""
    device = next(emulator.parameters()).device
    ids, mask, answer = ids.to(device), mask.to(device), answer.to(device)
    with torch.no_grad():
        target = torch.log_softmax(full(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), dim=-1)
    logits = emulator(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits, dim=-1), target, log_target=True,
                                    reduction="none").sum(-1)
    predicting = mask.bool().clone()
    predicting[:, -1] = False
    lengths = mask.sum(1)
    predicting[torch.arange(len(ids), device=device), (lengths - 1).clamp_min(0)] = False
    every = kl[predicting].mean() if predicting.any() else kl.sum() * 0
    on_answer = kl[answer].mean() if answer.any() else kl.sum() * 0
    return every, on_answer


def calibrate_harmonizers(full: nn.Module, emulator: nn.Module, layers: list[LayerEntry],
                          tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                          settings: CalibrationSettings | None = None, on_progress: CalibrationProgress | None = None,
                          should_stop: ShouldStop | None = None) -> CalibrationRecord:
    """Refine the harmonizers of `emulator` in place toward `full` on `prompts`; the record says what it bought."""
    settings = settings or CalibrationSettings()
    harmonizer_at = [e.emulator_index for e in layers if e.kind == LayerKind.harmonizer]
    if not harmonizer_at:
        raise ValueError("this emulator has no harmonizers to calibrate (a uniform or alpha-0 emulator)")
    if len(prompts) < 2:
        raise ValueError(f"calibration needs at least 2 prompts, got {len(prompts)}")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(prompts), generator=generator).tolist()
    n_check = min(max(1, round(settings.check_share * len(prompts))), len(prompts) - 1)
    check, fit = [prompts[i] for i in order[:n_check]], [prompts[i] for i in order[n_check:]]
    pad = pad_token_id(tokenizer)
    check_seqs = [_sequence(tokenizer, p, settings.max_len, torch.Generator().manual_seed(settings.seed + i))
                  for i, p in enumerate(check)]

    blocks = find_block_stack(emulator).blocks
    live = [blocks[i] for i in harmonizer_at]
    assert all(isinstance(h, Harmonizer) for h in live)
    saved = [copy.deepcopy(h.state_dict()) for h in live]
    dtypes = [next(h.parameters()).dtype for h in live]
    for h in live:
        h.float()  # float32 master copies (no-op on a float32 emulator); cast back below
    was_training, flags = emulator.training, [(p, p.requires_grad) for p in emulator.parameters()]
    emulator.eval()  # no dropout: the emulator and the full model see the same function
    full_was = full.training
    full.eval()
    params = [p for h in live for p in h.parameters()]
    for p in emulator.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)

    def check_loss() -> float:
        total = 0.0
        with torch.no_grad():
            for s in range(0, len(check_seqs), settings.batch_size):
                chunk = check_seqs[s : s + settings.batch_size]
                every, on_answer = _kl_terms(full, emulator, *_batch(chunk, pad))
                total += float(every + settings.answer_weight * on_answer) * len(chunk)
        return total / len(check_seqs)

    try:
        before = check_loss()
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
        curve: list[float] = []
        for step in range(settings.steps):
            if should_stop is not None and should_stop():
                raise CalibrationCancelled("calibration cancelled")
            picks = torch.randint(len(fit), (min(settings.batch_size, len(fit)),), generator=generator).tolist()
            seqs = [_sequence(tokenizer, fit[i], settings.max_len, generator) for i in picks]
            with torch.enable_grad():
                every, on_answer = _kl_terms(full, emulator, *_batch(seqs, pad))
                loss = every + settings.answer_weight * on_answer
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
            curve.append(round(float(loss.detach()), 5))
            if on_progress is not None and (step + 1) % 10 == 0:
                on_progress((step + 1) / settings.steps, f"calibrating on {len(fit)} prompts: step {step + 1}/"
                            f"{settings.steps}, KL {float(loss.detach()):.4f}")
        after = check_loss()
        kept = after < before
        if not kept:
            for h, state in zip(live, saved, strict=True):
                h.load_state_dict(state)
    except BaseException:
        for h, state in zip(live, saved, strict=True):
            h.load_state_dict(state)
        raise
    finally:
        for h, dtype in zip(live, dtypes, strict=True):
            h.to(dtype)
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
        emulator.train(was_training)
        full.train(full_was)
    return CalibrationRecord(
        prompts_sha256=prompt_set_sha256(prompts), n_prompts=len(fit), n_check=len(check), **settings.model_dump(),
        check_kl_before=before, check_kl_after=after, kept=kept, curve=curve,
        seconds=round(time.perf_counter() - started, 1))
