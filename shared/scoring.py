"""Multiple-choice scoring as lm-evaluation-harness 0.4 does it (HFLM.loglikelihood + multiple_choice).

Per (context, choice): the request is (context, " " + choice); trailing whitespace of the context
is moved to the front of the continuation (harness `_encode_pair`); context and context +
continuation are tokenized WITHOUT special tokens and the continuation tokens are the tail of the
whole encoding beyond the context's length (so a token spanning the boundary is tokenized as in
running text). The log-likelihood is the sum of log-softmax at the continuation tokens, with the
input left-truncated to the model's max length. `acc` = argmax log-likelihood, `acc_norm` = argmax
of log-likelihood / len(choice) in characters (the harness divides by the choice string, without
the delimiter); ties go to the first choice, like `np.argmax`. Stderr = sqrt(var(ddof=1) / n).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shared.data_formats import MCExample
from shared.training_batches import pad_token_id

TARGET_DELIMITER = " "
DEFAULT_MAX_LENGTH = 2048  # the harness's fallback when neither config nor tokenizer says
# requests tokenized and scored at a time: tokens are held for one chunk only, and `progress` (a job's
# cancellation check) runs before each chunk, so a cancel never waits for the whole data set to tokenize
SCORE_CHUNK = 256

Plain = tuple[int, list[int], list[int]]  # (request index, model input, continuation ids)


class NonFiniteScores(ValueError):
    """The model's log-likelihoods are NaN or infinite (its activations overflow): no accuracy is computed
    from them, since comparisons with NaN pick an arbitrary choice."""


class MCPrediction(BaseModel):
    label: int
    pred: int  # argmax log-likelihood
    pred_norm: int  # argmax log-likelihood per character of the choice
    loglikelihoods: list[float]


class MCResult(BaseModel):
    n: int
    acc: float
    acc_stderr: float  # NaN when n < 2 (JSON: null)
    acc_norm: float
    acc_norm_stderr: float
    predictions: list[MCPrediction]

    @property
    def correct(self) -> list[int]:
        """Per-example correctness of `acc` (1 = the argmax choice is the label), in example order."""
        return [int(p.pred == p.label) for p in self.predictions]


def continuation_pair(context: str, choice: str) -> tuple[str, str]:
    """(context, continuation) as the harness scores them: trailing context whitespace moves over."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + TARGET_DELIMITER + choice


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_request(tokenizer: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids (context, continuation) of one request whose context is already whitespace-stripped."""
    if not context:  # harness HFLM.prefix_token_id stands in for an empty context
        token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if token is None:
            raise ValueError("an empty context needs a BOS or EOS token, and the tokenizer has neither")
        return [int(token)], _encode(tokenizer, continuation)
    whole = _encode(tokenizer, context + continuation)
    context_ids = _encode(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


def max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The model's context length, looked up the way the harness does."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000_000 else DEFAULT_MAX_LENGTH


def _sliding_window(model: PreTrainedModel) -> int | None:
    """The window of sliding-window attention layers, if the model has any (the shared path needs
    its padded rows to fit in it, because such masks count the padding gap as distance)."""
    config = model.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if not window or not getattr(config, "use_sliding_window", True):
        return None
    if layer_types and "sliding_attention" not in layer_types:
        return None
    return int(window)


@dataclass
class _Group:
    """Requests that share one context: it runs once and every continuation reuses its KV cache."""

    context: list[int]
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (request index, continuation ids)


def _sum_logprobs(logits: torch.Tensor, targets: list[int]) -> float:
    """Sum of log_softmax(logits[i])[targets[i]]; logits: (len(targets), vocab)."""
    picked = logits.float().log_softmax(-1).gather(-1, torch.tensor(targets).unsqueeze(-1))
    return float(picked.sum())


def _run_plain(model: PreTrainedModel, batch: list[Plain], pad_id: int, keep_logits: bool, out: list[float]) -> None:
    """The harness's way: one right-padded row per request (right padding never changes a causal LM's
    outputs at the real positions, so no attention mask is needed)."""
    width = max(len(tokens) for _, tokens, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    for row, (_, tokens, _) in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    # logits are needed only from the earliest continuation start on: skip the LM head before it
    keep = max(width - len(tokens) + len(cont) for _, tokens, cont in batch)
    kwargs: dict[str, Any] = {"logits_to_keep": keep} if keep_logits else {}
    # an all-ones mask only says "no padding to hide" (silences transformers' padding warning)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, **kwargs).logits[:, -keep:]
    for row, (index, tokens, cont) in enumerate(batch):
        end = len(tokens) - (width - keep)
        out[index] = _sum_logprobs(logits[row, end - len(cont) : end], cont)


def _run_shared(
    model: PreTrainedModel, groups: list[_Group], pad_id: int, cache_name: str, keep_logits: bool, out: list[float]
) -> None:
    """Phase 1 runs each context minus its last token (right-padded) into the KV cache. Phase 2 runs,
    per continuation, [last context token] + continuation[:-1] on a copy of its context's cache rows,
    with the padding gap masked and explicit positions: each row sees exactly context + continuation."""
    prefix_width = max(len(g.context) - 1 for g in groups)
    cache = None
    if prefix_width > 0:
        ids = torch.full((len(groups), prefix_width), pad_id, dtype=torch.long)
        for row, group in enumerate(groups):
            ids[row, : len(group.context) - 1] = torch.tensor(group.context[:-1])
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if keep_logits else {}
        cache = getattr(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **kwargs), cache_name)
    rows = [(g, group, index, cont) for g, group in enumerate(groups) for index, cont in group.members]
    width = max(len(cont) for *_, cont in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), prefix_width + width), dtype=torch.long)
    positions = torch.empty((len(rows), width), dtype=torch.long)
    for row, (_, group, _, cont) in enumerate(rows):
        prefix = len(group.context) - 1
        ids[row, : len(cont)] = torch.tensor([group.context[-1], *cont[:-1]])
        mask[row, :prefix] = 1
        mask[row, prefix_width:] = 1  # trailing padding may attend freely: no real token follows it
        positions[row] = torch.arange(prefix, prefix + width)
    if cache is not None:
        cache.batch_select_indices(torch.tensor([g for g, *_ in rows]))
    result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_name: cache})
    for row, (*_, index, cont) in enumerate(rows):
        out[index] = _sum_logprobs(result.logits[row, : len(cont)], cont)


def _chunks(groups: list[_Group], rows: int) -> list[list[_Group]]:
    """Consecutive groups with at most `rows` continuations in all (a larger group goes alone)."""
    chunks: list[list[_Group]] = []
    for group in groups:
        if chunks and sum(len(g.members) for g in chunks[-1]) + len(group.members) <= rows:
            chunks[-1].append(group)
        else:
            chunks.append([group])
    return chunks


@torch.no_grad()
def loglikelihoods(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    limit: int | None = None,
    share_context: bool = True,
) -> list[float]:
    """Summed log-probability of each continuation given its context, for (context, continuation) pairs.

    Requests with the same context (the choices of one question) run that context once and share its
    KV cache (`share_context`; 3-5x fewer tokens on multiple choice). Requests that need left
    truncation, models without a cache argument and sliding-window overflows take the harness's path
    (one padded row per request). Work runs longest first, as in the harness, so batches pad little.
    `batch_size` counts requests per forward, `progress(done, total)` counts requests, and `limit`
    overrides the model's max length.
    """
    limit = limit or max_length(model, tokenizer)
    # a PEFT wrapper forwards **kwargs to its base model, whose signature tells what is supported
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    params = set(inspect.signature(base.forward).parameters)
    # transformers 5.2x renamed `past_key_values` to `cache`; accept either
    cache_name = next((n for n in ("cache", "past_key_values") if n in params), None) if share_context else None
    keep_logits = "logits_to_keep" in params
    groups: dict[tuple[int, ...], _Group] = {}
    plain: list[Plain] = []
    for index, (context, continuation) in enumerate(requests):
        context_ids, cont = encode_request(tokenizer, context, continuation)
        if not cont:
            raise ValueError(f"request {index}: the continuation {continuation!r} encodes to no tokens")
        if len(cont) > limit:
            raise ValueError(f"request {index}: continuation of {len(cont)} tokens exceeds max length {limit}")
        if cache_name is not None and len(context_ids) + len(cont) <= limit + 1:
            groups.setdefault(tuple(context_ids), _Group(context_ids)).members.append((index, cont))
        else:  # harness: the input is (context + continuation)[:-1], truncated from the left
            plain.append((index, (context_ids + cont)[-(limit + 1) :][:-1], cont))
    window = _sliding_window(model)
    shared = []
    for chunk in _chunks(sorted(groups.values(), key=lambda g: (-len(g.context), g.context)), batch_size):
        width = max(len(g.context) - 1 for g in chunk) + max(len(c) for g in chunk for _, c in g.members)
        if window is not None and width > window:
            plain.extend((i, (g.context + c)[:-1], c) for g in chunk for i, c in g.members)
        else:
            shared.append(chunk)
    plain.sort(key=lambda r: (-len(r[1]), r[1]))
    pad_id = pad_token_id(tokenizer)
    results = [math.nan] * len(requests)
    done = 0
    was_training = model.training
    model.eval()
    try:
        for chunk in shared:
            assert cache_name is not None  # only filled when the model takes a cache
            _run_shared(model, chunk, pad_id, cache_name, keep_logits, results)
            done += sum(len(g.members) for g in chunk)
            if progress is not None:
                progress(done, len(requests))
        for start in range(0, len(plain), batch_size):
            batch = plain[start : start + batch_size]
            _run_plain(model, batch, pad_id, keep_logits, results)
            done += len(batch)
            if progress is not None:
                progress(done, len(requests))
    finally:
        model.train(was_training)
    return results


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, like np.argmax


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean with the sample standard deviation (harness `mean_stderr`)."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _offset_progress(progress: Callable[[int, int], None], offset: int, total: int, done: int, _: int) -> None:
    progress(offset + done, total)


def score_multiple_choice(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[MCExample],
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    share_context: bool = True,
) -> MCResult:
    """acc / acc_norm with standard errors and per-example predictions; `progress` counts choices.
    Examples are tokenized and scored SCORE_CHUNK requests at a time, `progress` called before each chunk
    too; NonFiniteScores as soon as one log-likelihood is NaN or infinite."""
    if not examples:
        raise ValueError("no examples to score")
    for i, example in enumerate(examples):
        if len(example.choices) < 2 or not all(example.choices) or not 0 <= example.label < len(example.choices):
            raise ValueError(f"example {i}: needs >= 2 non-empty choices and 0 <= label < len(choices)")
    total = sum(len(example.choices) for example in examples)
    flat: list[float] = []
    start = 0
    while start < len(examples):
        end, size = start, 0
        while end < len(examples) and (end == start or size + len(examples[end].choices) <= SCORE_CHUNK):
            size += len(examples[end].choices)
            end += 1  # whole examples only: the choices of one question share its context's forward
        if progress is not None:
            progress(len(flat), total)  # before tokenizing: where a job notices a cancel
        requests = [continuation_pair(e.context, choice) for e in examples[start:end] for choice in e.choices]
        owners = [i for i in range(start, end) for _ in examples[i].choices]  # request -> example index
        hook = partial(_offset_progress, progress, len(flat), total) if progress is not None else None
        values = loglikelihoods(model, tokenizer, requests, batch_size, hook, share_context=share_context)
        bad = [i for i, value in enumerate(values) if not math.isfinite(value)]
        if bad:
            raise NonFiniteScores(f"{len(bad)} of {len(values)} log-likelihoods are not finite (NaN or Inf), the "
                                  f"first at example {owners[bad[0]] + 1}: the model's activations overflow on "
                                  "this data")
        flat.extend(values)
        start = end
    predictions, offset = [], 0
    for example in examples:
        lls = flat[offset : offset + len(example.choices)]
        offset += len(example.choices)
        normed = [ll / len(choice) for ll, choice in zip(lls, example.choices, strict=True)]
        predictions.append(
            MCPrediction(label=example.label, pred=_argmax(lls), pred_norm=_argmax(normed), loglikelihoods=lls)
        )
    acc = [float(p.pred == p.label) for p in predictions]
    acc_norm = [float(p.pred_norm == p.label) for p in predictions]
    return MCResult(
        n=len(examples),
        acc=sum(acc) / len(acc),
        acc_stderr=mean_stderr(acc),
        acc_norm=sum(acc_norm) / len(acc_norm),
        acc_norm_stderr=mean_stderr(acc_norm),
        predictions=predictions,
    )
