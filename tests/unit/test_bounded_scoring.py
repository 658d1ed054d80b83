"""Issue 27 items 1 and 8 in the scorer: examples are tokenized one chunk at a time with the progress
callback (a job's cancellation check) before each chunk, and NaN log-likelihoods raise instead of
becoming an accuracy."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from model_owner_server.tiny_models import byte_tokenizer, tiny_model
from shared.data_formats import MCExample
from shared.scoring import SCORE_CHUNK, NonFiniteScores, score_multiple_choice


class CountingTokenizer:
    """Delegates to a real tokenizer and counts how many texts it encoded."""

    def __init__(self, inner: PreTrainedTokenizerBase) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Cancelled(Exception):
    pass


def test_a_cancel_stops_before_the_rest_is_tokenized() -> None:
    model = tiny_model("tiny-gpt2")
    tokenizer = CountingTokenizer(byte_tokenizer())
    examples = [MCExample(f"Question {i}: the sky is", ["blue", "green"], 0) for i in range(1000)]
    requests = 2 * len(examples)
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        assert total == requests
        if seen and seen[-1] > 0:  # cancel requested after the first scored batch: the next check stops
            raise Cancelled
        seen.append(done)

    with pytest.raises(Cancelled):
        score_multiple_choice(model, tokenizer, examples, batch_size=16, progress=progress)  # type: ignore[arg-type]
    assert seen[0] == 0  # a check before anything was tokenized
    # two encodings per request (context, context + continuation), one chunk's worth; not all 2000 requests
    assert tokenizer.calls <= 2 * SCORE_CHUNK < 2 * requests


def test_chunked_scores_equal_one_chunk_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("tiny-gpt2")
    tokenizer = byte_tokenizer()
    examples = [MCExample(f"Item {i} is", ["red", "blue", "a green one"], i % 3) for i in range(12)]
    whole = score_multiple_choice(model, tokenizer, examples)
    monkeypatch.setattr("shared.scoring.SCORE_CHUNK", 5)  # chunks of one example (3 choices) at a time
    chunked = score_multiple_choice(model, tokenizer, examples)
    assert chunked.acc == whole.acc and chunked.n == whole.n == 12
    for a, b in zip(chunked.predictions, whole.predictions, strict=True):
        assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-5)


def test_nan_scores_raise_instead_of_an_accuracy() -> None:
    model = tiny_model("tiny-gpt2")
    handle = model.lm_head.register_forward_hook(lambda _m, _i, out: out * torch.nan)
    try:
        with pytest.raises(NonFiniteScores, match=r"not finite .* first at example 1"):
            score_multiple_choice(model, byte_tokenizer(), [MCExample("The sky is", ["blue", "green"], 0)] * 3)
    finally:
        handle.remove()
