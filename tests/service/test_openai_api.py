"""The OpenAI-compatible API (/openai/v1) with the official `openai` client against a real
`scaleot-server serve` on loopback (tiny models): models, completions, chat, streaming with usage, stop
sequences, a foreign adapter (404 NotFoundError), a bad key (401 AuthenticationError), bounds (400)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

from tests.service.adapters import make_adapter  # noqa: E402
from tests.service.conftest import UNIFORM, auth, download, upload  # noqa: E402
from tests.service.test_server import CLI, Server, server_env, wait_state  # noqa: E402, F401


def key(env: dict[str, str], owner: str) -> str:
    created = subprocess.run([*CLI, "keys", "create", "--owner", owner], env=env, capture_output=True, text=True,
                             check=True)
    return created.stdout.split()[-1]


@pytest.fixture
def running(server_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Server, str, str, str]]:  # noqa: F811
    """(server, alice's key, bob's key, alice's adapter id on tiny-gpt2)."""
    server_env["SCALEOT_STAGE1"] = '{"steps": 2, "batch_size": 2, "seq_len": 32, "harmonizer_rank": 8}'
    server_env["SCALEOT_GENERATE_MAX_NEW_TOKENS"] = "32"
    alice, bob = key(server_env, "alice"), key(server_env, "bob")
    server = Server(server_env, tmp_path / "server.log")
    client = server.start()
    try:
        emulator_id = client.post("/v1/emulators", json=UNIFORM, headers=auth(alice)).json()["id"]
        emulator = wait_state(client, f"/v1/emulators/{emulator_id}", auth(alice), {"succeeded"})
        emu_dir = download(client, auth(alice), emulator, tmp_path / "emu")
        make_adapter(emu_dir, tmp_path / "adapter")
        data = (tmp_path / "adapter" / "adapter.safetensors").read_bytes()
        uploaded = upload(client, auth(alice), emulator_id, [("adapter.safetensors", data)])
        assert uploaded.status_code == 201, uploaded.text
        yield server, alice, bob, uploaded.json()["id"]
    finally:
        server.stop()


def test_openai_client_against_a_real_server(running: tuple[Server, str, str, str]) -> None:
    server, alice_key, bob_key, adapter_id = running
    alice = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=alice_key, max_retries=0, timeout=60)
    bob = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=bob_key, max_retries=0, timeout=60)

    ids = {m.id for m in alice.models.list()}
    assert {adapter_id, "tiny-gpt2", "tiny-llama"} <= ids
    assert adapter_id not in {m.id for m in bob.models.list()}

    done = alice.completions.create(model=adapter_id, prompt="item 3 is", max_tokens=6, temperature=0)
    text = done.choices[0].text
    assert done.object == "text_completion" and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and 1 <= done.usage.completion_tokens <= 6
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    with __import__("httpx").Client(base_url=server.url, timeout=60) as rest:  # the REST path: the same text
        same = rest.post(f"/v1/adapters/{adapter_id}/generate", json={"prompt": "item 3 is", "max_new_tokens": 6},
                         headers=auth(alice_key)).json()
    assert same["completion"] == text

    streamed = alice.completions.create(model=adapter_id, prompt="item 3 is", max_tokens=6, temperature=0,
                                        stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == done.usage.completion_tokens

    if len(text) >= 4:  # a stop sequence cuts the text before it and ends the generation
        cut = alice.completions.create(model=adapter_id, prompt="item 3 is", max_tokens=6, temperature=0,
                                       stop=[text[2:4]])
        assert cut.choices[0].text == text[:text.index(text[2:4])] and cut.choices[0].finish_reason == "stop"

    chat = alice.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hello"}],
                                         max_tokens=5, temperature=0)
    content = chat.choices[0].message.content
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert isinstance(content, str) and chat.usage is not None and chat.usage.completion_tokens <= 5
    deltas = alice.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=5, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in deltas if c.choices) == content
    sampled = [alice.completions.create(model=adapter_id, prompt="hi", max_tokens=5, temperature=0.8, seed=3)
               .choices[0].text for _ in range(2)]
    assert sampled[0] == sampled[1]  # the same seed, the same text, whatever shares the batch

    with pytest.raises(openai.NotFoundError) as foreign:
        bob.completions.create(model=adapter_id, prompt="hi", max_tokens=2)
    assert foreign.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model="ada-doesnotexist", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="sk-wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as too_many:
        alice.completions.create(model=adapter_id, prompt="hi", max_tokens=33)
    assert too_many.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as long_prompt:
        alice.completions.create(model="tiny-gpt2", prompt="x " * 600, max_tokens=8)
    assert long_prompt.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        alice.completions.create(model=adapter_id, prompt="hi", n=2)
