"""JSON parsing with bounds, for text that comes from someone else (request bodies, safetensors
headers, `adapter_config.json`).

`json.loads` alone turns hostile input into a crash or into work: a 5000-digit integer raises a
plain ValueError (Python's int-string limit), nesting 100k deep raises RecursionError, `NaN` and
`Infinity` are accepted although JSON has no such values, and `1e999` becomes an infinite float.
`loads_bounded` refuses each of these with one exception type, `JSONLimitError`, or `ValueError`
subclass `json.JSONDecodeError` for text that is not JSON at all.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # arrays/objects inside each other
MAX_INT_DIGITS = 40  # enough for any 128-bit integer


class JSONLimitError(ValueError):
    """Valid-looking JSON beyond the accepted bounds (too deep, too long a number, a non-finite value)."""


def _int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > MAX_INT_DIGITS:
        raise JSONLimitError(f"an integer has {len(digits)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > 2 * MAX_INT_DIGITS:
        raise JSONLimitError(f"a number is {len(text)} characters long (at most {2 * MAX_INT_DIGITS})")
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"the number {text[:20]} overflows a 64-bit float")
    return value


def _constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not a JSON value")


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed value (scalars: 0), counted without recursion up to limit + 1."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level) for child in children)
    return deepest


def loads_bounded(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` that raises JSONLimitError for input beyond the bounds and JSONDecodeError
    (or UnicodeDecodeError for bytes) for input that is not JSON."""
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise JSONLimitError(f"nested deeper than {max_depth} levels") from None
    if depth(value, max_depth) > max_depth:
        raise JSONLimitError(f"nested deeper than {max_depth} levels")
    return value
