"""Issue 27 item 8: an adapter that is silent on the old one-sentence probe and overflows on the letter
"Z" is refused at upload by the varied probe. One that slips past a probe anyway is refused where it
breaks: generation answers 422 naming non-finite values, an evaluation fails saying why and reports
no accuracy."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save

from model_owner_server.app.services import probe
from model_owner_server.base_models import load_base_model
from model_owner_server.jobs.worker import Worker
from tests.service.conftest import Headers, upload

OLD_PROBE = ("An adapter is plugged into the full model and tried on this sentence before it is accepted.",)
Z_ROWS = [{"context": "Z", "choices": [" blue", " green"], "label": 0}] * 3


def z_trap(adapter_file: Path) -> dict[str, torch.Tensor]:
    """The tiny-gpt2 adapter with one MLP unit of block 0 rewired: its pre-activation is +50 for "Z" at the
    first position and <= -50 at every position of the old probe sentence, where gelu gives exactly 0; its
    output row is 3e38, so "Z" overflows to Inf and everything else is unchanged."""
    state = load_file(adapter_file)
    model = copy.deepcopy(load_base_model("tiny-gpt2").model)
    model.load_state_dict(state, strict=False)
    seen: list[torch.Tensor] = []
    hook = model.transformer.h[0].mlp.register_forward_hook(lambda _m, args, _o: seen.append(args[0][0].double()))
    tokenizer = load_base_model("tiny-gpt2").tokenizer
    with torch.no_grad():
        for text in (*OLD_PROBE, "Z"):
            model(input_ids=tokenizer(text, return_tensors="pt")["input_ids"])
    hook.remove()
    probe_inputs, z = seen[0], seen[1][0]
    w = z - probe_inputs.mean(0)
    top, rest = float(w @ z), float((probe_inputs @ w).max())
    assert top > rest, "the probe sentence does not leave 'Z' separable"
    scale = 100 / (top - rest)
    trapped = dict(state)
    fc_w, fc_b = trapped["transformer.h.0.mlp.c_fc.weight"].clone(), trapped["transformer.h.0.mlp.c_fc.bias"].clone()
    fc_w[:, 0] = (scale * w).float()
    fc_b[0] = -scale * (top + rest) / 2
    proj = trapped["transformer.h.0.mlp.c_proj.weight"].clone()
    proj[0, :] = 3e38  # finite, so the per-tensor checks pass
    trapped.update({"transformer.h.0.mlp.c_fc.weight": fc_w, "transformer.h.0.mlp.c_fc.bias": fc_b,
                    "transformer.h.0.mlp.c_proj.weight": proj})
    return trapped


def send(client: TestClient, alice: Headers, built: dict[str, Any]) -> Any:
    state = z_trap(built["adapter_dir"] / "adapter.safetensors")
    data = save(state, metadata={"emulator_id": built["emulator"]["id"]})
    return upload(client, alice, built["emulator"]["id"], [("adapter.safetensors", data)])


def test_the_varied_probe_refuses_an_adapter_that_overflows_on_z(client: TestClient, alice: Headers,
                                                                 built: dict[str, Any]) -> None:
    response = send(client, alice, built)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]["problems"]
    assert any("not finite" in p and "'Z'" in p for p in problems), problems
    assert client.get("/v1/adapters", headers=alice).json()["items"] == []


@pytest.fixture
def slipped(client: TestClient, alice: Headers, built: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """The same adapter accepted under the old one-sentence probe: what a probe can always miss."""
    monkeypatch.setattr(probe, "PROBE_TEXTS", OLD_PROBE)
    response = send(client, alice, built)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_generation_with_non_finite_logits_is_a_422(client: TestClient, alice: Headers, slipped: str) -> None:
    url = f"/v1/adapters/{slipped}/generate"
    fine = client.post(url, json={"prompt": OLD_PROBE[0], "max_new_tokens": 1}, headers=alice)
    assert fine.status_code == 200, fine.text  # the adapter works where the probe looked
    for body in ({"prompt": "Z", "max_new_tokens": 5}, {"prompt": "Z", "max_new_tokens": 5, "temperature": 0.7}):
        response = client.post(url, json=body, headers=alice)
        assert response.status_code == 422, response.text  # not "!!!!!" from argmax over NaN
        assert "non-finite values (NaN or Inf)" in response.json()["detail"], response.text


def test_an_evaluation_on_nan_scores_fails_saying_why(client: TestClient, worker: Worker, alice: Headers,
                                                      slipped: str) -> None:
    from tests.service.test_evaluations import jsonl

    response = client.post("/v1/evaluations", data={"adapter_id": slipped, "task": "zeds"},
                           files=[("file", ("z.jsonl", jsonl(Z_ROWS)))], headers=alice)
    assert response.status_code == 202, response.text
    worker.run_until_idle()
    done = client.get(f"/v1/evaluations/{response.json()['id']}", headers=alice).json()
    assert done["status"]["state"] == "failed", done["status"]
    assert "adapter refused" in done["status"]["error"] and "non-finite scores" in done["status"]["error"]
    assert done["result"] is None  # no accuracy from NaN
