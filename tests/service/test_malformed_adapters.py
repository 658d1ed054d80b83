"""Issue 11, class 3: malformed safetensors headers, `__metadata__` and `adapter_config.json` are 422
(they were 500s): huge integers, deep nesting, wrong types."""

from __future__ import annotations

import json
import struct
from typing import Any

from fastapi.testclient import TestClient

from tests.service.conftest import Headers, upload

NAME = "transformer.h.0.ln_1.weight"


def safetensors_with(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def entry(**overrides: Any) -> dict[str, Any]:
    return {"dtype": "F32", "shape": [64], "data_offsets": [0, 256], **overrides}


HEADERS = {
    "5000-digit integer": b'{"' + NAME.encode() + b'": {"dtype": "F32", "shape": [' + b"9" * 5000
    + b'], "data_offsets": [0, 256]}}',
    "nested 100k deep": b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "__metadata__ a string": json.dumps({"__metadata__": "emulator", NAME: entry()}).encode(),
    "__metadata__ a list": json.dumps({"__metadata__": ["a"], NAME: entry()}).encode(),
    "__metadata__ of numbers": json.dumps({"__metadata__": {"emulator_id": 7}, NAME: entry()}).encode(),
    "entry a list": json.dumps({NAME: [1, 2]}).encode(),
    "shape of strings": json.dumps({NAME: entry(shape=["64"])}).encode(),
    "negative offsets": json.dumps({NAME: entry(data_offsets=[256, 0])}).encode(),
    "offsets beyond shape": json.dumps({NAME: entry(data_offsets=[0, 8])}).encode(),
    "dtype an object": json.dumps({NAME: entry(dtype={"F32": 1})}).encode(),
    "NaN in header": b'{"' + NAME.encode() + b'": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 256]}}',
}


def test_malformed_safetensors_header_is_422(client: TestClient, alice: Headers, uploaded: dict[str, Any]) -> None:
    for case, header in HEADERS.items():  # one emulator for every case (building one takes seconds)
        body = safetensors_with(header, b"\x00" * 256)
        for name in ("adapter.safetensors", "adapter_model.safetensors"):
            files = [(name, body)] if name == "adapter.safetensors" else [
                ("adapter_config.json", b'{"peft_type": "LORA"}'), (name, body)]
            response = upload(client, alice, uploaded["emulator"]["id"], files)
            assert response.status_code == 422, (case, name, response.text)
            assert response.json()["detail"]["problems"]


CONFIGS = {
    "5000-digit integer": b'{"peft_type": "LORA", "r": ' + b"7" * 5000 + b"}",
    "nested 100k deep": b'{"peft_type": "LORA", "r": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "target_modules nested": json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "layers_to_transform": [0],
                                         "target_modules": [["c_attn"]]}).encode(),
    "a list": b"[1, 2]",
    "not UTF-8": b'{"r": "\xff\xfe"}',
    "Infinity": b'{"peft_type": "LORA", "lora_alpha": Infinity}',
}


def test_malformed_lora_config_is_422(client: TestClient, alice: Headers, uploaded: dict[str, Any]) -> None:
    weights = (uploaded["adapter_dir"] / "adapter.safetensors").read_bytes()
    for case, config in CONFIGS.items():
        response = upload(client, alice, uploaded["emulator"]["id"], [("adapter_config.json", config),
                                                                      ("adapter_model.safetensors", weights)])
        assert response.status_code == 422, (case, response.text)
        assert any("adapter_config.json" in p for p in response.json()["detail"]["problems"]), case
