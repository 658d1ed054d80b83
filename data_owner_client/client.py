"""A small typed HTTP client for the model owner's service (what the `scaleot` CLI is built on).

    client = ScaleOTClient("http://127.0.0.1:8000", api_key)
    emu = client.request_emulator(EmulatorRequest(base_model="smollm2-135m", method="scaleot", alpha=0.5))
    emu = client.wait_emulator(emu.id)
    client.download_emulator(emu.id, Path("emu"))

Connection errors are retried with backoff; HTTP errors raise `ApiError` carrying the server's
`detail`. Answers are parsed into the contract's models (`shared.api`, the same the server serves);
one that does not fit raises `ClientError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from data_owner_client.download import DownloadProgress, DownloadResult, download_emulator
from data_owner_client.errors import ApiError, ClientError, format_detail
from shared.adapter_format import ADAPTER_FILE, PEFT_CONFIG, PEFT_WEIGHTS
from shared.api import (
    AdapterList,
    AdapterOut,
    AgreementOut,
    DialRecommendation,
    EmulatorList,
    EmulatorOut,
    EmulatorRequest,
    EvaluationOut,
    GenerateOut,
    Health,
    JobStatus,
    ModelInfo,
    PromptSetOut,
    TaskInfo,
)
from shared.job_outcomes import FINISHED

__all__ = ["ApiError", "ClientError", "ScaleOTClient", "format_detail"]

T = TypeVar("T")


class HasStatus(Protocol):
    @property
    def status(self) -> JobStatus: ...


J = TypeVar("J", bound=HasStatus)


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail", response.text)
    except ValueError:
        return response.text


class ScaleOTClient:
    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0, retries: int = 3,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ScaleOTClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if attempt == self.retries:
                    raise ClientError(f"cannot reach the ScaleOT service at {self.url} ({exc.__class__.__name__}); "
                                      "check --url / SCALEOT_URL and that the server is running") from exc
                time.sleep(delay)
                delay *= 2
                continue
            if response.status_code >= 400:
                raise ApiError(response.status_code, _detail(response), f"{method} {path}")
            return response
        raise AssertionError("unreachable")

    def get(self, path: str, answer: type[T], **kwargs: Any) -> T:
        return self._parse(answer, self.request("GET", path, **kwargs), f"GET {path}")

    def post(self, path: str, answer: type[T], **kwargs: Any) -> T:
        return self._parse(answer, self.request("POST", path, **kwargs), f"POST {path}")

    @staticmethod
    def _parse(answer: type[T], response: httpx.Response, what: str) -> T:
        try:
            return TypeAdapter(answer).validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ClientError(f"unexpected answer to {what} ({where}: {first['msg']}); is this client older than "
                              "the server? upgrade it") from None

    @contextmanager
    def stream(self, path: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", path, headers=headers) as response:
                if response.status_code >= 400 and response.status_code != 416:
                    response.read()
                    raise ApiError(response.status_code, _detail(response), f"GET {path}")
                yield response
        except (httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise ClientError(f"download from {self.url} interrupted ({exc.__class__.__name__}); run the same "
                              "command again to resume") from exc

    # -- resources --------------------------------------------------------------------------------
    def health(self) -> Health:
        return self.get("/healthz", Health)

    def models(self) -> list[ModelInfo]:
        return self.get("/v1/models", list[ModelInfo])

    def recommendation(self, model: str, privacy_gap: float, conservative: bool = False) -> DialRecommendation:
        """The (alpha, beta) the model owner recommends for a wanted privacy gap (from its measured frontier)."""
        return self.get(f"/v1/models/{quote(model, safe='')}/recommendation", DialRecommendation,
                        params={"privacy_gap": privacy_gap, "conservative": str(conservative).lower()})

    def tasks(self) -> list[TaskInfo]:
        return self.get("/v1/tasks", list[TaskInfo])

    def request_emulator(self, spec: EmulatorRequest | dict[str, Any]) -> EmulatorOut:
        """A dict is sent as it is: the server validates it and says what to fix."""
        body = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
        return self.post("/v1/emulators", EmulatorOut, json=body)

    def emulator(self, emulator_id: str) -> EmulatorOut:
        return self.get(f"/v1/emulators/{emulator_id}", EmulatorOut)

    def emulators(self) -> list[EmulatorOut]:
        return self.get("/v1/emulators", EmulatorList).items

    def wait_emulator(self, emulator_id: str, poll: float = 2.0, timeout: float | None = None,
                      on_status: Callable[[EmulatorOut], None] | None = None) -> EmulatorOut:
        return self._wait(lambda: self.emulator(emulator_id), poll, timeout, on_status)

    def download_emulator(self, emulator_id: str, out_dir: Path,
                          on_progress: Callable[[DownloadProgress], None] | None = None) -> DownloadResult:
        return download_emulator(self, emulator_id, out_dir, on_progress)

    def upload_adapter(self, emulator_id: str, adapter_dir: Path) -> AdapterOut:
        names = [n for n in (ADAPTER_FILE, PEFT_CONFIG, PEFT_WEIGHTS) if (adapter_dir / n).is_file()]
        if not names:
            raise ClientError(f"{adapter_dir} holds no {ADAPTER_FILE} and no PEFT {PEFT_CONFIG} + {PEFT_WEIGHTS}; "
                              "train one with `scaleot train`")
        handles = [(n, (adapter_dir / n).open("rb")) for n in names]
        try:
            files = [("file", (n, f, "application/octet-stream")) for n, f in handles]
            return self.post("/v1/adapters", AdapterOut, data={"emulator_id": emulator_id}, files=files,
                             timeout=httpx.Timeout(30.0, read=600.0, write=600.0))
        finally:
            for _, f in handles:
                f.close()

    def adapters(self) -> list[AdapterOut]:
        return self.get("/v1/adapters", AdapterList).items

    def adapter(self, adapter_id: str) -> AdapterOut:
        return self.get(f"/v1/adapters/{adapter_id}", AdapterOut)

    def run_evaluation(self, adapter_id: str, task: str | None = None, data: Path | None = None,
                       limit: int | None = None) -> EvaluationOut:
        if data is not None:
            fields = {"adapter_id": adapter_id, "task": task or data.stem}
            if limit is not None:
                fields["limit"] = str(limit)
            with data.open("rb") as f:
                files = [("file", (data.name, f, "application/jsonl"))]
                return self.post("/v1/evaluations", EvaluationOut, data=fields, files=files)
        body = {"adapter_id": adapter_id, "task": task, "limit": limit}  # as given: the server says what to fix
        return self.post("/v1/evaluations", EvaluationOut, json=body)

    def evaluation(self, evaluation_id: str) -> EvaluationOut:
        return self.get(f"/v1/evaluations/{evaluation_id}", EvaluationOut)

    def wait_evaluation(self, evaluation_id: str, poll: float = 2.0, timeout: float | None = None,
                        on_status: Callable[[EvaluationOut], None] | None = None) -> EvaluationOut:
        return self._wait(lambda: self.evaluation(evaluation_id), poll, timeout, on_status)

    def upload_prompt_set(self, prompts: Path) -> PromptSetOut:
        """Upload unlabelled prompts (JSONL of {"context", "choices"}) for a task-calibrated emulator."""
        with prompts.open("rb") as f:
            return self.post("/v1/prompt-sets", PromptSetOut,
                             files=[("file", (prompts.name, f, "application/jsonl"))],
                             timeout=httpx.Timeout(30.0, read=600.0, write=600.0))

    def check_agreement(self, emulator_id: str, prompts: Path) -> AgreementOut:
        """Upload unlabelled prompts (JSONL of {"context", "choices"}) for an agreement check of the emulator."""
        with prompts.open("rb") as f:
            return self.post(f"/v1/emulators/{quote(emulator_id, safe='')}/agreement", AgreementOut,
                             files=[("file", (prompts.name, f, "application/jsonl"))],
                             timeout=httpx.Timeout(30.0, read=600.0, write=600.0))

    def agreement(self, check_id: str) -> AgreementOut:
        return self.get(f"/v1/agreements/{quote(check_id, safe='')}", AgreementOut)

    def wait_agreement(self, check_id: str, poll: float = 2.0, timeout: float | None = None,
                       on_status: Callable[[AgreementOut], None] | None = None) -> AgreementOut:
        return self._wait(lambda: self.agreement(check_id), poll, timeout, on_status)

    def generate(self, adapter_id: str, prompt: str, max_new_tokens: int = 32, temperature: float = 0.0,
                 chat: bool = False) -> GenerateOut:
        body = {"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": temperature, "chat": chat}
        return self.post(f"/v1/adapters/{adapter_id}/generate", GenerateOut, json=body,
                         timeout=httpx.Timeout(30.0, read=600.0))

    def _wait(self, fetch: Callable[[], J], poll: float, timeout: float | None,
              on_status: Callable[[J], None] | None) -> J:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = fetch()
            if on_status is not None:
                on_status(current)
            if current.status.state in FINISHED:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"still {current.status.state} after {timeout:.0f} s; check again later "
                                  "with the status command")
            time.sleep(poll)
