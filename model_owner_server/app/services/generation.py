"""Text generation with the full model + an uploaded adapter, plugged once and kept in an LRU."""

from __future__ import annotations

import logging
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from model_owner_server.adapter_checks import validate
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services.errors import Gone, Unprocessable
from model_owner_server.db.models import Adapter, Emulator
from model_owner_server.plug_in import plug_in
from model_owner_server.storage.keys import adapter_prefix
from shared.adapter_format import AdapterError
from shared.api import GenerateOut, GenerateRequest
from shared.manifest import EmulatorManifest
from shared.training_batches import pad_token_id

log = logging.getLogger("scaleot.api")


def plugged_model(state: AppState, adapter: Adapter, emulator: Emulator) -> tuple[PreTrainedModel, bool]:
    """(full model with the adapter, whether it came from the cache)."""
    assert emulator.manifest_json is not None
    manifest = EmulatorManifest.model_validate_json(emulator.manifest_json)
    cached = adapter.id in state.plugged

    def build() -> PreTrainedModel:
        base = state.base_models.get(manifest.base_model)
        try:
            checked = validate(state.store.local_dir(adapter_prefix(adapter.id)), base, manifest)
        except (AdapterError, OSError) as exc:
            # it passed the same validate() at upload, so its stored copy was lost or damaged since: the owner's
            # log gets the reason, the caller what to do (the reason may hold a server path)
            log.error("adapter %s: stored file missing or damaged: %s", adapter.id, exc)
            raise Gone(f"the stored file of adapter {adapter.id} is missing or damaged; upload the adapter "
                       f"again (POST /v1/adapters with emulator_id {adapter.emulator_id})") from exc
        return plug_in(base, checked)

    return state.plugged.get_or_build(adapter.id, build), cached


def context_window(model: PreTrainedModel) -> int | None:
    """Positions the model can attend over (None when its config does not say)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(prompt_tokens: int, max_new: int, window: int | None) -> None:
    """422 when the prompt plus the new tokens would run past the context window."""
    if window is not None and prompt_tokens + max_new > window:
        raise Unprocessable(f"the prompt is {prompt_tokens} tokens; with max_new_tokens {max_new} that is "
                            f"{prompt_tokens + max_new}, over the model's context window of {window} tokens: "
                            "shorten the prompt or ask for fewer tokens")


class NonFiniteLogits(ValueError):
    """The plugged model's next-token logits hold NaN or +Inf (its activations overflow on this prompt)."""


class FiniteLogits(LogitsProcessor):
    """Stop generation at the first step whose logits hold NaN or +Inf, or no finite value at all. Greedy
    decoding would otherwise pick token 0 from NaN and answer "!!!!!" as if it were text. It runs after
    generate's own processors (which may set single logits to -Inf on purpose), so -Inf alone is allowed."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if torch.isnan(scores).any() or torch.isposinf(scores).any() or torch.isneginf(scores).all(-1).any():
            raise NonFiniteLogits(f"non-finite logits after {input_ids.shape[-1]} tokens")
        return scores


@torch.no_grad()
def generate(state: AppState, adapter: Adapter, emulator: Emulator, request: GenerateRequest) -> GenerateOut:
    started = time.perf_counter()
    model, cached = plugged_model(state, adapter, emulator)
    manifest = EmulatorManifest.model_validate_json(emulator.manifest_json or "{}")
    tokenizer = state.base_models.get(manifest.base_model).tokenizer
    text = request.prompt
    if request.chat and getattr(tokenizer, "chat_template", None):
        text = str(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True))
    inputs = tokenizer(text, return_tensors="pt")
    max_new = min(request.max_new_tokens, state.settings.generate_max_new_tokens)
    check_fits(int(inputs["input_ids"].shape[1]), max_new, context_window(model))
    sample = request.temperature > 0
    options: dict[str, object] = {"max_new_tokens": max_new, "do_sample": sample,
                                  "pad_token_id": pad_token_id(tokenizer),
                                  "logits_processor": LogitsProcessorList([FiniteLogits()])}
    if sample:
        options.update(temperature=request.temperature, top_p=request.top_p)
        torch.manual_seed(request.seed if request.seed is not None else int(time.time_ns() % 2**31))
    try:
        output = model.generate(**inputs, **options)  # type: ignore[operator]
    except NonFiniteLogits as exc:
        raise Unprocessable("the adapter is refused for this prompt: with it plugged in, the model produces "
                            f"non-finite values (NaN or Inf) ({exc}), so there is no text to return; its weights "
                            "overflow the full model: retrain it (e.g. with a lower learning rate) and upload it "
                            "again") from exc
    except RuntimeError as exc:  # "probability tensor contains either inf, nan or element < 0"
        if "probability tensor" not in str(exc):
            raise
        raise Unprocessable(f"generation failed for these settings: {str(exc)[:200]}; the plugged model's "
                            "output is not a usable distribution here (try temperature 0)") from exc
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    completion = tokenizer.decode(new_tokens, skip_special_tokens=True)
    return GenerateOut(adapter_id=adapter.id, prompt=request.prompt, completion=completion,
                       new_tokens=int(new_tokens.numel()), seconds=time.perf_counter() - started, cached_model=cached)
