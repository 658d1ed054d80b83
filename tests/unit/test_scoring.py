"""Multiple-choice scoring: parity of the batched scorer with one plain forward per (context, choice)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model_owner_server.tiny_models import TINY_MODELS, byte_tokenizer, tiny_model
from shared.data_formats import MCExample
from shared.scoring import continuation_pair, loglikelihoods, mean_stderr, score_multiple_choice

EXAMPLES = [
    MCExample("The cat sat on the", ["mat", "dog", "a rather long answer"], 0),
    MCExample("Q: What is 2 + 2?\nA:", ["4", "five", "22"], 0),
    MCExample("Answer: ", ["yes", "no"], 1),  # trailing whitespace moves into the continuation
    MCExample("Topic\n\n", ["sport", "business", "tech", "politics", "arts"], 3),
    MCExample("", ["alpha", "beta"], 1),  # empty context: scored after the BOS token, as the harness does
    MCExample("x", ["yy", "z"], 0),
    MCExample("A somewhat longer context that needs more tokens than the others do, " * 2, ["end", "stop"], 1),
]


def _reference_loglikelihood(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, context: str, choice: str, limit: int | None = None
) -> float:
    """Straightforward: one unbatched forward, sum of log_softmax at the continuation positions."""
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + " " + choice
    if stripped:
        context_ids = tokenizer(stripped, add_special_tokens=False)["input_ids"]
        whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
        cont_ids = whole[len(context_ids) :]
    else:
        context_ids = [tokenizer.bos_token_id]
        cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    tokens = context_ids + cont_ids
    if limit is not None:
        tokens = tokens[-(limit + 1) :]
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([tokens[:-1]])).logits[0].log_softmax(-1)
    first = len(tokens) - 1 - len(cont_ids)
    return sum(float(logprobs[first + j, t]) for j, t in enumerate(cont_ids))


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return byte_tokenizer()


@pytest.fixture(scope="module", params=TINY_MODELS)
def model_and_reference(
    request: pytest.FixtureRequest, tokenizer: PreTrainedTokenizerBase
) -> tuple[PreTrainedModel, list[np.ndarray]]:
    model = tiny_model(request.param)
    reference = [
        np.array([_reference_loglikelihood(model, tokenizer, e.context, c) for c in e.choices]) for e in EXAMPLES
    ]
    return model, reference


@pytest.mark.parametrize(("batch_size", "share_context"), [(16, True), (3, True), (1, True), (4, False)])
def test_batched_scores_equal_unbatched_reference(
    model_and_reference: tuple[PreTrainedModel, list[np.ndarray]],
    batch_size: int,
    share_context: bool,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    model, references = model_and_reference
    result = score_multiple_choice(model, tokenizer, EXAMPLES, batch_size=batch_size, share_context=share_context)
    assert result.n == len(EXAMPLES)
    acc, acc_norm = [], []
    for example, prediction, reference in zip(EXAMPLES, result.predictions, references, strict=True):
        np.testing.assert_allclose(prediction.loglikelihoods, reference, rtol=0, atol=1e-4)
        lengths = np.array([len(c) for c in example.choices], dtype=float)  # the choice, without the space
        assert prediction.pred == int(np.argmax(reference))
        assert prediction.pred_norm == int(np.argmax(reference / lengths))
        assert prediction.label == example.label
        acc.append(float(np.argmax(reference) == example.label))
        acc_norm.append(float(np.argmax(reference / lengths) == example.label))
    assert result.acc == pytest.approx(np.mean(acc))
    assert result.acc_norm == pytest.approx(np.mean(acc_norm))
    assert result.acc_stderr == pytest.approx(np.std(acc, ddof=1) / math.sqrt(len(acc)))
    assert result.acc_norm_stderr == pytest.approx(np.std(acc_norm, ddof=1) / math.sqrt(len(acc_norm)))


def test_left_truncation_to_the_model_max_length(tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_model("tiny-llama")
    example = EXAMPLES[-1]
    requests = [continuation_pair(example.context, c) for c in example.choices]
    for share_context in (True, False):
        got = loglikelihoods(model, tokenizer, requests, limit=24, share_context=share_context)
        want = [_reference_loglikelihood(model, tokenizer, example.context, c, limit=24) for c in example.choices]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="exceeds max length 2"):
        loglikelihoods(model, tokenizer, requests, limit=2)


def test_whitespace_rule() -> None:
    assert continuation_pair("Q: sky?\nA:", "blue") == ("Q: sky?\nA:", " blue")
    assert continuation_pair("Q: sky?\nA: ", "blue") == ("Q: sky?\nA:", "  blue")  # harness: moved + delimiter
    assert continuation_pair("Topic\n\n", "sport") == ("Topic", "\n\n sport")
    assert continuation_pair("", "x") == ("", " x")


def test_trailing_whitespace_scores_like_its_moved_form(tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_model("tiny-llama")
    spaced = loglikelihoods(model, tokenizer, [continuation_pair("Answer: ", "yes")])
    moved = loglikelihoods(model, tokenizer, [("Answer:", "  yes")])
    assert spaced == pytest.approx(moved, abs=1e-6)


def test_progress_restores_mode_and_validates(tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_model("tiny-gpt2").train()
    calls: list[tuple[int, int]] = []
    score_multiple_choice(model, tokenizer, EXAMPLES, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    total = sum(len(e.choices) for e in EXAMPLES)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert model.training  # scoring runs in eval mode and gives the model back as it was
    with pytest.raises(ValueError, match="label"):
        score_multiple_choice(model, tokenizer, [MCExample("q", ["a", "b"], 2)])
    with pytest.raises(ValueError, match="no examples"):
        score_multiple_choice(model, tokenizer, [])


def test_mean_stderr_matches_harness() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0]
    assert mean_stderr(values) == pytest.approx(np.std(values, ddof=1) / math.sqrt(len(values)))
    assert math.isnan(mean_stderr([1.0]))


def test_peft_wrapped_model_scores_like_its_base(tokenizer: PreTrainedTokenizerBase) -> None:
    from peft import LoraConfig, get_peft_model

    requests = [continuation_pair(EXAMPLES[0].context, c) for c in EXAMPLES[0].choices]
    bare = loglikelihoods(tiny_model("tiny-llama"), tokenizer, requests)
    wrapped = get_peft_model(tiny_model("tiny-llama"), LoraConfig(r=4, target_modules=["q_proj"]))  # B = 0
    np.testing.assert_allclose(loglikelihoods(wrapped, tokenizer, requests), bare, rtol=0, atol=1e-5)
