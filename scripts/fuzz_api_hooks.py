"""Schemathesis hooks for `scripts/fuzz_api.py`: half of the generated ids are replaced by ids of real
objects (listed in $SCALEOT_FUZZ_IDS), so that the fuzz reaches past the 404s into the routes' work:
downloads, cancels, generation with a real adapter, evaluations of it, uploads to a built emulator."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import schemathesis

IDS: dict[str, list[str]] = json.loads(os.environ.get("SCALEOT_FUZZ_IDS", "{}"))
FILE_NAMES = ["manifest.json", "config.json", "emulator.safetensors"]


def _pick(value: Any, choices: list[str]) -> str | None:
    digest = zlib.crc32(repr(value).encode())
    return choices[(digest // 2) % len(choices)] if digest % 2 == 0 and choices else None


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(path_parameters, dict):  # an operation without path parameters, or a negative case
        return path_parameters
    out = dict(path_parameters)
    for name, value in path_parameters.items():
        real = _pick(value, FILE_NAMES if name == "name" and "files" in context.operation.path else IDS.get(name, []))
        if real is not None:
            out[name] = real
    return out


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for name in ("adapter_id", "emulator_id"):
        if name in body:
            real = _pick(body[name], IDS.get(name, []))
            if real is not None:
                out[name] = real
    return out
