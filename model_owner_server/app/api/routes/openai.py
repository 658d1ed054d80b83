"""An OpenAI-compatible API for plugged adapters (`/openai/v1`): any OpenAI client library can list the
caller's models and generate with them, streaming included.

`model` is an adapter id the caller owns, or a served base model's name for the bare base. Same API keys
as the REST API (`Authorization: Bearer <key>`), checked here before the body is read (the request guard
protects `/v1/` only); every error has OpenAI's shape `{"error": {"message", "type", "param", "code"}}`.
A generation joins the served model's running batch; a client that disconnects, or a stop sequence,
ends it at the next step.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from model_owner_server.app.api.deps import authenticate, bearer_token, remembered
from model_owner_server.app.api.openai_schemas import ChatRequest, CompletionRequest, OpenAIError, Sampling
from model_owner_server.app.core.security import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services.completions import (
    Target,
    TextStream,
    bounded_prompt,
    chat_text,
    list_models,
    resolve,
)
from model_owner_server.app.services.generation import refused
from model_owner_server.serving.sampling import NonFiniteLogits
from model_owner_server.serving.scheduler import GenRequest, QueueFull
from model_owner_server.serving.sinks import AsyncSink
from shared.bounded_json import JSONLimitError, loads_bounded

router = APIRouter(prefix="/openai/v1", tags=["openai"])
DISCONNECT_POLL_S = 0.5


async def _principal(request: Request, state: AppState) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    principal = remembered(state, token)
    if principal is not None:
        return principal
    try:
        return await to_thread.run_sync(authenticate, state, token)
    except HTTPException as exc:
        raise OpenAIError(401, f"Incorrect API key provided: {exc.detail}", None, "invalid_api_key",
                          {"WWW-Authenticate": "Bearer"}) from exc


async def _body(request: Request, kind: type[Sampling]) -> Sampling:
    """The body as `kind`: parsed within the guard's JSON bounds whatever its Content-Type says (the guard
    checks only bodies declared JSON), and validated from the JSON text, so a lone surrogate (which no
    tokenizer takes) is refused as in the REST API: a 400, never a 500."""
    data = await request.body() or b"null"
    try:
        loads_bounded(data)
    except JSONLimitError as exc:
        raise OpenAIError(400, f"the request body is refused: {exc}") from exc
    except ValueError as exc:  # not JSON, or not UTF-8
        raise OpenAIError(400, "the request body is not valid JSON") from exc
    try:
        return kind.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise OpenAIError(400, f"{param}: {first['msg']}" if param else first["msg"], param) from exc


def _openai(handler: Callable[[Request, AppState], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        try:
            return await handler(request, request.app.state.scaleot)
        except OpenAIError as exc:
            return exc.response()
    return route


async def models(request: Request, state: AppState) -> Response:
    principal = await _principal(request, state)
    found = await to_thread.run_sync(list_models, state, principal)
    return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": int(created),
                                                     "owned_by": owner} for name, owner, created in found]})


class Run:
    """One generation on the served model, its events read from the scheduler thread without a thread here."""

    def __init__(self, state: AppState, target: Target, prompt: list[int], max_new: int, body: Sampling) -> None:
        self.sink = AsyncSink(asyncio.get_running_loop())
        serving = state.serving()
        self.job: GenRequest = serving.request(target.base_model, prompt, target.adapter, max_new, self.sink,
                                               body.temperature, body.top_p, body.seed)
        self.text = TextStream(target.tokenizer, body.stops())
        self.prompt_tokens = len(prompt)
        try:
            serving.submit(target.base_model, self.job)
        except QueueFull as exc:  # not submitted: `_start` releases the adapter's pin (once)
            raise OpenAIError(503, str(exc), None, "overloaded", {"Retry-After": str(exc.retry_after_s)}) from exc

    async def deltas(self, request: Request) -> AsyncIterator[tuple[str, str | None]]:
        """(new text, finish reason once finished); the run is cancelled if the reader stops or the client leaves."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + DISCONNECT_POLL_S
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self.sink.events.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    event = None
                # every DISCONNECT_POLL_S also while tokens keep coming (they do, faster than that): else a
                # client that left a non-streamed request went unnoticed until all its tokens were made
                if event is None or loop.time() >= next_check:
                    if await request.is_disconnected():
                        return
                    next_check = loop.time() + DISCONNECT_POLL_S
                if event is None:
                    continue
                if event[0] == "token":
                    delta, stopped = self.text.feed(event[1])
                    if stopped:
                        yield delta, "stop"
                        return
                    if delta:
                        yield delta, None
                    continue
                _, reason, error = event
                if isinstance(error, NonFiniteLogits):
                    raise OpenAIError(422, str(refused(error).detail), None, "non_finite_logits")
                if error is not None:
                    raise OpenAIError(500, f"generation failed ({type(error).__name__}); see the server log")
                yield self.text.flush(), "length" if reason == "length" else "stop"
                return
        finally:
            self.job.cancel()  # no-op when it finished; else it leaves the batch at the next step

    def usage(self) -> dict[str, int]:
        done = len(self.job.produced)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}


async def _start(request: Request, state: AppState, kind: type[Sampling]) -> tuple[Sampling, Run]:
    principal = await _principal(request, state)
    body = await _body(request, kind)
    target = await to_thread.run_sync(resolve, state, principal, body.model)
    try:
        if isinstance(body, ChatRequest):
            text, max_tokens = chat_text(target.tokenizer, body), body.max_completion_tokens or body.max_tokens
        else:
            assert isinstance(body, CompletionRequest)
            text, max_tokens = body.text(), body.max_tokens
        prompt, max_new = bounded_prompt(state, target, text, body, max_tokens)
        return body, Run(state, target, prompt, max_new, body)
    except BaseException:
        if target.adapter is not None:  # never submitted: its pin is ours to release
            state.serving().release(target.adapter.key)
        raise


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def _respond(request: Request, body: Sampling, run: Run, chat: bool) -> Response:
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
    head: dict[str, Any] = {"id": ident, "object": "chat.completion" if chat else "text_completion",
                            "created": int(time.time()), "model": body.model}

    def choice(text: str, reason: str | None, streaming: bool) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        key, content = ("delta", {"content": text} if text else {}) if streaming else (
            "message", {"role": "assistant", "content": text})
        return {"index": 0, key: content, "logprobs": None, "finish_reason": reason}

    if not body.stream:
        async def collect() -> Response:
            parts: list[str] = []
            reason: str | None = None
            async for delta, finish in run.deltas(request):
                parts.append(delta)
                reason = finish or reason
            return JSONResponse({**head, "choices": [choice("".join(parts), reason, False)], "usage": run.usage()})
        return _Deferred(collect)

    usage_wanted = body.stream_options is not None and body.stream_options.include_usage
    chunk_head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

    async def events() -> AsyncIterator[str]:
        extra = {"usage": None} if usage_wanted else {}
        if chat:
            yield _sse({**chunk_head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                    "logprobs": None, "finish_reason": None}], **extra})
        try:
            async for delta, reason in run.deltas(request):
                if delta or reason:
                    yield _sse({**chunk_head, "choices": [choice(delta, reason, True)], **extra})
        except OpenAIError as exc:  # the status is sent already: the error goes in the stream, as OpenAI does
            yield _sse(json.loads(bytes(exc.response().body)))
            return
        if usage_wanted:
            yield _sse({**chunk_head, "choices": [], "usage": run.usage()})
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class _Deferred(Response):
    """A response computed when sent (so errors raised while collecting still become OpenAI errors)."""

    def __init__(self, make: Callable[[], Awaitable[Response]]) -> None:
        super().__init__()
        self.make = make

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            response = await self.make()
        except OpenAIError as exc:
            response = exc.response()
        await response(scope, receive, send)


async def completions(request: Request, state: AppState) -> Response:
    body, run = await _start(request, state, CompletionRequest)
    return _respond(request, body, run, chat=False)


async def chat_completions(request: Request, state: AppState) -> Response:
    body, run = await _start(request, state, ChatRequest)
    return _respond(request, body, run, chat=True)


class _ModelList(BaseModel):
    object: str
    data: list[dict[str, Any]]


# OpenAI's statuses, each with its {"error": {...}} body: declared so that clients and the API fuzz see them
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or a wrong API key"},
    503: {"description": "the serving queue is full or the database unavailable; see Retry-After"},
}
_GENERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"description": "an invalid request: the body, a parameter out of range, a prompt past the context"},
    404: {"description": "model_not_found: not an adapter of the caller nor a served base model"},
    422: {"description": "the adapter produces non-finite values (NaN or Inf)"},
}
router.add_api_route("/models", _openai(models), methods=["GET"], summary="The caller's adapters and the base models",
                     response_model=_ModelList, responses=_ERRORS)
router.add_api_route("/completions", _openai(completions), methods=["POST"], summary="OpenAI text completion",
                     responses=_GENERATION_ERRORS)
router.add_api_route("/chat/completions", _openai(chat_completions), methods=["POST"],
                     summary="OpenAI chat completion", responses=_GENERATION_ERRORS)
