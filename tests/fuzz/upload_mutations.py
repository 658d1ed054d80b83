"""Mutations of valid adapter uploads for the upload fuzzer: safetensors bytes (header length, header
bytes, header JSON fields, offsets, dtypes, shapes, `__metadata__`, tensor values, truncation) and
PEFT LoRA directories (the config's JSON and fields, the weights, the set of files).

Every mutator takes a random generator and the valid upload and returns (kind, files), where files
are the multipart `file` parts as (name, bytes). Deterministic for a given generator state.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from typing import Any

Files = list[tuple[str, bytes]]
Mutator = Callable[[random.Random, bytes], bytes]

HOSTILE_VALUES: list[Any] = [
    None, True, -1, 0, 2**64, -(2**70), 1e308, 3.5, "", "x" * 300, "F64", [], [[]], {}, {"a": {"b": []}},
    [1, 2, 3], ["q_proj"], [["q_proj"]], "NaN", 10**30,
]
DTYPES = ["F64", "I8", "U8", "BOOL", "F8_E4M3", "", "f32", "F32 ", "BF16", "F16", "I64"]


def split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + length]), blob[8 + length:]


def join(header: dict[str, Any] | bytes, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _length_field(rng: random.Random, blob: bytes) -> bytes:
    (length,) = struct.unpack("<Q", blob[:8])
    value = rng.choice([0, 1, 7, length - 1, length + 1, len(blob), len(blob) - 8, 2**31, 2**63, 2**64 - 1,
                        rng.randrange(2**64)])
    return struct.pack("<Q", max(0, min(value, 2**64 - 1))) + blob[8:]


def _header_bytes(rng: random.Random, blob: bytes) -> bytes:
    (length,) = struct.unpack("<Q", blob[:8])
    out = bytearray(blob)
    for _ in range(rng.randint(1, 8)):
        out[8 + rng.randrange(length)] = rng.randrange(256)
    return bytes(out)


def _truncate_or_extend(rng: random.Random, blob: bytes) -> bytes:
    if rng.random() < 0.5:
        return blob[:rng.randrange(len(blob))]
    return blob + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))


def _tensor_field(rng: random.Random, blob: bytes) -> bytes:
    header, data = split(blob)
    name = rng.choice([k for k in header if k != "__metadata__"])
    field = rng.choice(["dtype", "shape", "data_offsets"])
    entry = dict(header[name])
    if field == "dtype":
        entry["dtype"] = rng.choice([*DTYPES, *HOSTILE_VALUES])
    elif field == "shape":
        shape = list(entry["shape"])
        choice = rng.random()
        if choice < 0.3 and shape:
            shape[rng.randrange(len(shape))] = rng.choice([0, -1, 2**40, shape[0] + 1, "3", 1.5])
        elif choice < 0.6:
            shape = list(reversed(shape)) + ([1] if rng.random() < 0.5 else [])
        else:
            entry["shape"] = rng.choice(HOSTILE_VALUES)
            shape = entry["shape"]
        entry["shape"] = shape
    else:
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[end, begin], [begin, end + 4], [begin - 4, end], [begin, end, 0],
                                            [begin], [0, 2**63], [-1, end], [str(begin), end], [begin + 0.5, end],
                                            rng.choice(HOSTILE_VALUES)])
    header[name] = entry if rng.random() < 0.9 else rng.choice(HOSTILE_VALUES)
    return join(header, data)


def _entries(rng: random.Random, blob: bytes) -> bytes:
    header, data = split(blob)
    names = [k for k in header if k != "__metadata__"]
    choice = rng.random()
    if choice < 0.3:
        del header[rng.choice(names)]
    elif choice < 0.6:
        header[f"model.layers.{rng.randrange(100)}.extra.weight"] = {"dtype": "F32", "shape": [2],
                                                                     "data_offsets": [0, 8]}
    else:
        first, second = rng.sample(names, 2) if len(names) > 1 else (names[0], names[0])
        header[first], header[second] = header[second], header[first]  # offsets/shapes swapped between tensors
    return join(header, data)


def _metadata(rng: random.Random, blob: bytes) -> bytes:
    header, data = split(blob)
    header["__metadata__"] = rng.choice([*HOSTILE_VALUES, {"emulator_id": 7}, {"emulator_id": "emu-other"},
                                         {"format": {"x": 1}}, ["emulator_id"], "emulator"])
    return join(header, data)


def _raw_json(rng: random.Random, blob: bytes) -> bytes:
    """Header text the JSON encoder would never write: huge integers, deep nesting, NaN, junk."""
    header, data = split(blob)
    text = json.dumps(header)
    trick = rng.choice([
        lambda t: t.replace('"shape": [', '"shape": [' + "9" * rng.choice([30, 500, 5000]) + ", ", 1),
        lambda t: t[:-1] + ', "deep": ' + "[" * rng.choice([100, 10_000, 100_000]) + "]" * 100_000 + "}",
        lambda t: t.replace('"data_offsets": [', '"data_offsets": [NaN, ', 1),
        lambda t: t.replace('"dtype": "F32"', '"dtype": "F32", "dtype": "F64"', 1),
        lambda t: t[: rng.randrange(len(t))],
        lambda t: "[" + t + "]",
        lambda t: t.replace('{', '{"\\ud800": 1, ', 1),
    ])
    return join(trick(text).encode("utf-8", "surrogatepass"), data)


def _values(rng: random.Random, blob: bytes) -> bytes:
    header, data = split(blob)
    name = rng.choice([k for k in header if k != "__metadata__" and header[k].get("dtype") == "F32"])
    begin, end = header[name]["data_offsets"]
    value = rng.choice([float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 1e30, 65504.0])
    count = (end - begin) // 4
    spots = range(count) if rng.random() < 0.5 else [rng.randrange(count) for _ in range(4)]
    out = bytearray(data)
    for spot in spots:
        out[begin + 4 * spot: begin + 4 * spot + 4] = struct.pack("<f", value)
    return join(header, bytes(out))


SAFETENSORS_MUTATORS: dict[str, Mutator] = {
    "length field": _length_field, "header bytes": _header_bytes, "truncate/extend": _truncate_or_extend,
    "tensor field": _tensor_field, "entries": _entries, "__metadata__": _metadata, "raw header JSON": _raw_json,
    "tensor values": _values,
}


def mutate_config(rng: random.Random, config: bytes) -> bytes:
    parsed = json.loads(config)
    choice = rng.random()
    if choice < 0.5:
        field = rng.choice([*parsed, "modules_to_save", "rank_pattern", "use_dora", "brand_new"])
        parsed[field] = rng.choice(HOSTILE_VALUES)
    elif choice < 0.65:
        parsed.pop(rng.choice(list(parsed)), None)
    elif choice < 0.8:
        parsed["layers_to_transform"] = rng.choice([[0, 99], [-1], [], list(range(200)), [True], "0"])
    else:
        text = json.dumps(parsed)
        cut = rng.randrange(len(text))
        return (text[:cut] + rng.choice(["", "9" * 5000, "[" * 50_000, "NaN", "\xff", "}"]) + text[cut:]).encode(
            "utf-8", "surrogateescape")
    return json.dumps(parsed).encode()


def full_case(rng: random.Random, adapter: bytes) -> tuple[str, Files]:
    kind = rng.choice(list(SAFETENSORS_MUTATORS))
    blob = SAFETENSORS_MUTATORS[kind](rng, adapter)
    if rng.random() < 0.25:  # a second mutation on top, where the first left a parsable file
        second = rng.choice(list(SAFETENSORS_MUTATORS))
        try:
            blob = SAFETENSORS_MUTATORS[second](rng, blob)
            kind = "two mutations"
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError, struct.error):
            pass
    return f"full: {kind}", [("adapter.safetensors", blob)]


def lora_case(rng: random.Random, files: dict[str, bytes]) -> tuple[str, Files]:
    config, weights = files["adapter_config.json"], files["adapter_model.safetensors"]
    choice = rng.random()
    if choice < 0.45:
        return "lora: config", [("adapter_config.json", mutate_config(rng, config)),
                                ("adapter_model.safetensors", weights)]
    if choice < 0.85:
        kind = rng.choice(list(SAFETENSORS_MUTATORS))
        return f"lora: weights {kind}", [("adapter_config.json", config),
                                         ("adapter_model.safetensors", SAFETENSORS_MUTATORS[kind](rng, weights))]
    sets: list[Files] = [
        [("adapter_model.safetensors", weights)], [("adapter_config.json", config)],
        [("adapter_config.json", config), ("adapter_model.safetensors", weights), ("adapter.safetensors", weights)],
        [("adapter_config.json", config), ("adapter_config.json", config), ("adapter_model.safetensors", weights)],
        [("adapter_config.json", weights), ("adapter_model.safetensors", config)],
        [("../adapter_config.json", config), ("adapter_model.safetensors", weights)],
        [("adapter_config.json", config), ("weights.bin", weights)],
    ]
    return "lora: file set", rng.choice(sets)
