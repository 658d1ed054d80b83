"""Text generation with the full model + an uploaded adapter, plugged once and kept in an LRU."""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel

from model_owner_server.app.core.state import AppState
from model_owner_server.app.schemas import GenerateOut, GenerateRequest
from model_owner_server.db.models import Adapter, Emulator
from model_owner_server.plug_in import check_adapter, plug_in
from shared.manifest import EmulatorManifest


def plugged_model(state: AppState, adapter: Adapter, emulator: Emulator) -> tuple[PreTrainedModel, bool]:
    """(full model with the adapter, whether it came from the cache)."""
    assert emulator.manifest_json is not None
    manifest = EmulatorManifest.model_validate_json(emulator.manifest_json)
    cached = adapter.id in state.plugged

    def build() -> PreTrainedModel:
        base = state.base_models.get(manifest.base_model)
        checked = check_adapter(state.store.local_dir(f"adapters/{adapter.id}"), base, manifest)
        return plug_in(base, checked)

    return state.plugged.get_or_build(adapter.id, build), cached


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
    sample = request.temperature > 0
    options: dict[str, object] = {"max_new_tokens": max_new, "do_sample": sample,
                                  "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
    if sample:
        options.update(temperature=request.temperature, top_p=request.top_p)
        torch.manual_seed(request.seed if request.seed is not None else int(time.time_ns() % 2**31))
    output = model.generate(**inputs, **options)  # type: ignore[operator]
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    completion = tokenizer.decode(new_tokens, skip_special_tokens=True)
    return GenerateOut(adapter_id=adapter.id, prompt=request.prompt, completion=completion,
                       new_tokens=int(new_tokens.numel()), seconds=time.perf_counter() - started, cached_model=cached)
