"""The OpenAI-compatible API's service side: which model a request names (an adapter the caller owns, or
a served base model), its prompt in tokens within the bounds, and its text as the tokens arrive (held
back while it may still be the start of a stop sequence or of a multi-byte character)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select
from transformers import PreTrainedTokenizerBase

from model_owner_server.app.api.openai_schemas import ChatRequest, OpenAIError, Sampling
from model_owner_server.app.core.security import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services.access import visible_adapter
from model_owner_server.app.services.errors import Gone, NotFound, Unprocessable
from model_owner_server.app.services.generation import context_window, served_adapter
from model_owner_server.db.models import Adapter, Emulator
from model_owner_server.serving.adapters import LoadedAdapter
from shared.manifest import EmulatorManifest


@dataclass
class Target:
    base_model: str
    adapter: LoadedAdapter | None  # pinned: released when its request ends (or by `release`)
    tokenizer: PreTrainedTokenizerBase


def list_models(state: AppState, principal: Principal) -> list[tuple[str, str, float]]:
    """(id, owned_by, created) of the served base models and the caller's adapters (the admin: all)."""
    out = [(name, "model-owner", 0.0) for name in state.settings.models]
    with Session(state.engine) as session:
        query = select(Adapter).order_by(col(Adapter.created_at))
        if not principal.is_admin:
            query = query.where(Adapter.owner_id == principal.owner_id)
        out += [(a.id, a.owner_id or "model-owner", a.created_at) for a in session.exec(query)]
    return out


def resolve(state: AppState, principal: Principal, model: str) -> Target:
    """The served base model of that name, or the caller's adapter with that id (404 for anything else,
    another owner's adapter included)."""
    serving = state.serving()
    if model in state.settings.models:
        return Target(model, None, serving.served(model).tokenizer)
    try:
        with Session(state.engine, expire_on_commit=False) as session:
            adapter = visible_adapter(session, principal, model)
            emulator = session.get(Emulator, adapter.emulator_id)
    except NotFound as exc:
        raise OpenAIError(404, f"The model '{model[:200]}' does not exist or you do not have access to it.",
                          "model", "model_not_found") from exc
    if emulator is None or emulator.manifest_json is None:
        raise OpenAIError(404, f"the emulator of adapter {model} is not available", "model", "model_not_found")
    manifest = EmulatorManifest.model_validate_json(emulator.manifest_json)
    try:
        loaded, _ = served_adapter(state, adapter, manifest)
    except Gone as exc:
        raise OpenAIError(410, str(exc.detail), "model", "adapter_gone") from exc
    except Unprocessable as exc:
        raise OpenAIError(422, str(exc.detail), "model") from exc
    return Target(manifest.base_model, loaded, serving.served(manifest.base_model).tokenizer)


def chat_text(tokenizer: PreTrainedTokenizerBase, body: ChatRequest) -> str:
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"  # no template: plain turns


def bounded_prompt(state: AppState, target: Target, text: str, body: Sampling, max_tokens: int | None
                   ) -> tuple[list[int], int]:
    """(prompt tokens, new tokens): max_tokens past SCALEOT_GENERATE_MAX_NEW_TOKENS, or prompt + max_tokens past
    the context window, is a 400 naming the field (no silent cut)."""
    cap = state.settings.generate_max_new_tokens
    if max_tokens is not None and max_tokens > cap:
        raise OpenAIError(400, f"max_tokens is {max_tokens}; this server generates at most {cap} tokens per request",
                          "max_tokens", "max_tokens_exceeded")
    prompt = [int(t) for t in target.tokenizer(text)["input_ids"]]
    if not prompt:
        raise OpenAIError(400, "the prompt is empty", "prompt")
    window = context_window(state.serving().served(target.base_model).model)
    room = (window - len(prompt)) if window is not None else cap
    wanted = max_tokens if max_tokens is not None else min(cap, room)
    if window is not None and len(prompt) + wanted > window:
        raise OpenAIError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                          f"{len(prompt) + wanted} tokens ({len(prompt)} in the prompt, {wanted} for the "
                          "completion). Please reduce the prompt or max_tokens.", "messages" if
                          isinstance(body, ChatRequest) else "prompt", "context_length_exceeded")
    return prompt, wanted


class TextStream:
    """Token ids in, text out as soon as it is final."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0

    def feed(self, token: int) -> tuple[str, bool]:
        """(text now final, whether a stop sequence ended it)."""
        self.ids.append(token)
        self.text = str(self.tokenizer.decode(self.ids, skip_special_tokens=True))
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        if hits:
            end = min(hits)
            out, self.sent = self.text[self.sent:end], end
            self.text = self.text[:end]
            return out, True
        safe = len(self.text) - (1 if self.text.endswith("\ufffd") else 0)  # a character still incomplete
        for stop in self.stops:  # text that may be the start of a stop sequence waits
            for k in range(min(len(stop) - 1, safe - self.sent), 0, -1):
                if self.text[safe - k:safe] == stop[:k]:
                    safe -= k
                    break
        out = self.text[self.sent:safe]
        self.sent = max(self.sent, safe)
        return out, False

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out
