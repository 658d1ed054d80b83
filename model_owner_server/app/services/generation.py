"""Text generation with the full model + an uploaded adapter: on the shared-base serving (`model_owner_server.serving`),
batched with every other request for the same base model."""

from __future__ import annotations

import logging
import time

from transformers import PreTrainedModel

from model_owner_server.adapter_checks import CheckedAdapter, validate
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services.errors import Gone, Unprocessable
from model_owner_server.db.models import Adapter, Emulator
from model_owner_server.serving.adapters import LoadedAdapter
from model_owner_server.serving.sampling import NonFiniteLogits
from model_owner_server.serving.scheduler import QueueFull
from model_owner_server.serving.sinks import BlockingSink
from model_owner_server.storage.keys import adapter_prefix
from shared.adapter_format import AdapterError
from shared.api import GenerateOut, GenerateRequest
from shared.manifest import EmulatorManifest

log = logging.getLogger("scaleot.api")


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


def served_adapter(state: AppState, adapter: Adapter, manifest: EmulatorManifest) -> tuple[LoadedAdapter, bool]:
    """The adapter's own tensors in the shared-base serving, pinned (released when its request ends);
    (it, whether it was loaded already). Checked with the same validate() as at upload on a miss."""
    def check() -> CheckedAdapter:
        base = state.base_models.get(manifest.base_model)
        try:
            return validate(state.store.local_dir(adapter_prefix(adapter.id)), base, manifest)
        except (AdapterError, OSError) as exc:
            log.error("adapter %s: stored file missing or damaged: %s", adapter.id, exc)
            raise Gone(f"the stored file of adapter {adapter.id} is missing or damaged; upload the adapter "
                       f"again (POST /v1/adapters with emulator_id {adapter.emulator_id})") from exc

    try:
        return state.serving().acquire_adapter(manifest.base_model, adapter.id, check)
    except ValueError as exc:  # validate() passed, but a tensor lies outside what the server can route
        raise Unprocessable(f"adapter {adapter.id} cannot be served: {exc}") from exc


def refused(exc: Exception) -> Unprocessable:
    return Unprocessable("the adapter is refused for this prompt: with it plugged in, the model produces "
                         f"non-finite values (NaN or Inf) ({exc}), so there is no text to return; its weights "
                         "overflow the full model: retrain it (e.g. with a lower learning rate) and upload it again")


def generate(state: AppState, adapter: Adapter, emulator: Emulator, request: GenerateRequest) -> GenerateOut:
    """On the shared base (`model_owner_server.serving`): the request joins the served model's running batch
    and this thread waits for its tokens. QueueFull when the model's queue is full."""
    started = time.perf_counter()
    manifest = EmulatorManifest.model_validate_json(emulator.manifest_json or "{}")
    serving = state.serving()
    served = serving.served(manifest.base_model)
    tokenizer = served.tokenizer
    text = request.prompt
    if request.chat and getattr(tokenizer, "chat_template", None):
        text = str(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True))
    prompt = [int(t) for t in tokenizer(text)["input_ids"]]
    max_new = min(request.max_new_tokens, state.settings.generate_max_new_tokens)
    check_fits(len(prompt), max_new, context_window(served.model))
    loaded, cached = served_adapter(state, adapter, manifest)
    cached = cached or adapter.id in state.plugged  # the upload's probe proved and plugged it in this process
    sink = BlockingSink()
    job = serving.request(manifest.base_model, prompt, loaded, max_new, sink, request.temperature, request.top_p,
                          request.seed)
    try:
        serving.submit(manifest.base_model, job)
    except QueueFull:
        serving.release(adapter.id)
        raise
    sink.wait()
    if isinstance(sink.error, NonFiniteLogits):
        raise refused(sink.error) from sink.error
    if sink.error is not None:
        raise sink.error
    completion = tokenizer.decode(sink.tokens, skip_special_tokens=True)
    return GenerateOut(adapter_id=adapter.id, prompt=request.prompt, completion=completion,
                       new_tokens=len(sink.tokens), seconds=time.perf_counter() - started, cached_model=cached)
