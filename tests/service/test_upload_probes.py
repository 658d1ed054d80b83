"""Issue 27 item 3: upload probes run on probe threads, one at a time by default, with a bounded queue;
an upload waiting for its probe holds no API thread, so /healthz and reads are answered meanwhile;
past the queue an upload is answered 503 with Retry-After at once; and the probe's plugged model
shares the base model's tensors instead of copying the full model."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import PreTrainedModel

from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.app.services import adapters as service
from model_owner_server.base_models import LoadedBase
from model_owner_server.settings import Settings
from tests.service.conftest import Headers, make_settings, upload
from tests.service.test_protocol import declared


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    """Two API threads: before, two uploads in their probes held both, and /healthz waited for them."""
    return make_settings(tmp_path / "data", api_threads=2, generation_concurrency=1, probe_concurrency=1,
                         probe_queue=2)


def _wait_until(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_probes_are_bounded_off_the_api_threads(client: TestClient, alice: Headers, built: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    threads: list[str] = []
    real_prove = service.prove

    def gated_prove(base: LoadedBase, checked: CheckedAdapter) -> PreTrainedModel:
        threads.append(threading.current_thread().name)
        gate.wait(60)  # a slow probe, held until the test has looked at the service meanwhile
        return real_prove(base, checked)

    monkeypatch.setattr(service, "prove", gated_prove)
    pool = client.app.state.scaleot.probes()
    data = (built["adapter_dir"] / "adapter.safetensors").read_bytes()
    emulator_id = built["emulator"]["id"]

    def send() -> httpx.Response:
        return upload(client, alice, emulator_id, [("adapter.safetensors", data)])

    with ThreadPoolExecutor(3) as senders:
        try:
            sent = [senders.submit(send) for _ in range(3)]
            _wait_until(lambda: pool.admitted == 3 and len(threads) == 1)  # one probing, two queued
            busy = send()  # concurrency 1 + queue 2 are taken: refused at once, not queued
            assert busy.status_code == 503, busy.text
            assert int(busy.headers["Retry-After"]) >= 1 and "Retry-After" not in busy.json()["detail"]
            assert "too many adapter uploads" in busy.json()["detail"]
            started = time.monotonic()
            for path in ("/healthz", "/v1/adapters", "/v1/emulators"):  # sync routes: they need an API thread
                assert client.get(path, headers=alice).status_code == 200
            assert time.monotonic() - started < 5  # not waiting for the probes
        finally:
            gate.set()
        answers = [f.result(timeout=120) for f in sent]
    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]
    assert pool.peak_running == 1 and pool.admitted == 0
    assert len(threads) == 3 and all(name.startswith("scaleot-probe") for name in threads)
    assert 503 in declared(client.get("/openapi.json").json(), "post", "/v1/adapters")


def test_the_probed_model_shares_the_base_models_tensors(client: TestClient, uploaded: dict[str, Any]) -> None:
    """The plugged model the probe ran (kept for generation) is the base plus the adapter's own blocks."""
    state = client.app.state.scaleot
    plugged = state.plugged.get_or_build(uploaded["adapter"]["id"], lambda: pytest.fail("not cached"))
    base = state.base_models.get("tiny-gpt2").model
    shared = {p.data_ptr() for p in base.parameters()}
    own = [n for n, p in plugged.named_parameters() if p.data_ptr() not in shared]
    assert own and all(n.startswith(("transformer.h.0.", "transformer.h.7.")) for n in own), own
    embeddings = plugged.get_input_embeddings().weight
    assert embeddings.data_ptr() == base.get_input_embeddings().weight.data_ptr()
    with torch.no_grad():  # and it answers: generation uses it as it is
        assert torch.isfinite(plugged(torch.tensor([[1, 2, 3]])).logits).all()
