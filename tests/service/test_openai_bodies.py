"""Malformed bodies on /openai/v1 are OpenAI-shaped 400s, never 500s: bytes that are not UTF-8, a lone
surrogate (JSON can spell one; no tokenizer takes it), and bodies beyond the JSON bounds sent with a
Content-Type other than JSON (the request guard bounds only bodies declared JSON)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import Headers

LONE = '"\\ud800"'
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("path", "body"), [
    ("/openai/v1/completions", b"\xff"),
    ("/openai/v1/completions", b'{"model": "tiny-gpt2", "prompt": "\xff"}'),
    ("/openai/v1/completions", f'{{"model": "tiny-gpt2", "prompt": {LONE}}}'.encode()),
    ("/openai/v1/completions", f'{{"model": "tiny-gpt2", "prompt": "x", "stop": {LONE}}}'.encode()),
    ("/openai/v1/chat/completions",
     f'{{"model": "tiny-gpt2", "messages": [{{"role": "user", "content": {LONE}}}]}}'.encode()),
    ("/openai/v1/chat/completions",
     f'{{"model": "tiny-gpt2", "messages": [{{"role": "user", "content": [{{"type": "text", "text": {LONE}}}]}}]}}'
     .encode()),
])
def test_undecodable_text_is_a_400(client: TestClient, alice: Headers, path: str, body: bytes) -> None:
    client = TestClient(client.app, raise_server_exceptions=False)
    response = client.post(path, content=body, headers={**alice, "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("body", [
    '{"model": "tiny-gpt2", "prompt": "x", "max_tokens": 1' + "0" * 5000 + "}",
    '{"model": "tiny-gpt2", "prompt": ' + DEEP + "}",
    '{"model": "tiny-gpt2", "prompt": "x", "temperature": NaN}',
])
def test_bounds_hold_whatever_the_content_type(client: TestClient, alice: Headers, content_type: str,
                                               body: str) -> None:
    client = TestClient(client.app, raise_server_exceptions=False)
    response = client.post("/openai/v1/completions", content=body.encode(),
                           headers={**alice, "content-type": content_type})
    assert response.status_code == 400, response.text
    assert "refused" in response.json()["error"]["message"]


def test_a_plain_text_content_type_still_generates(client: TestClient, alice: Headers) -> None:
    response = client.post("/openai/v1/completions", content=b'{"model": "tiny-gpt2", "prompt": "hi", "max_tokens": 2}',
                           headers={**alice, "content-type": "text/plain"})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 2
