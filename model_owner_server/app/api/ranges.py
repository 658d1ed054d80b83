"""HTTP single-range requests (RFC 9110 §14): parse `Range`, honour `If-Range` against the ETag; and
`If-None-Match` (§13.1.2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# ASCII digits only (RFC 9110's DIGIT); `\d` would also take other scripts' digits
_SPEC = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


class Unsatisfiable(ValueError):
    """The range lies outside the file: answer 416 with `Content-Range: bytes */size`."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _position(digits: str, size: int) -> int:
    """A byte position, exact up to the file size: a number with more digits than `size` is past the
    end whatever its value, so it becomes `size + 1` instead of being parsed (`int()` refuses more
    than 4,300 digits, and a long one would cost quadratic time)."""
    significant = digits.lstrip("0")
    if len(significant) > len(str(size)):
        return size + 1
    return int(significant or "0")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The requested range, None for "send the whole file" (no header, several ranges or a malformed
    one, which RFC 9110 says to ignore), or Unsatisfiable."""
    if not header:
        return None
    match = _SPEC.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = _position(last, size)
        if n == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - n), size - 1)
    start = _position(first, size)
    end = _position(last, size) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable(header)
    return ByteRange(start, min(end, size - 1))


def range_applies(if_range: str | None, etag: str) -> bool:
    """`If-Range` lets a client resume only if the file is unchanged (strong ETag match)."""
    return if_range is None or if_range.strip() == etag


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag[:2] in ("W/", "w/") else tag


def none_match(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` matches the current ETag, so a GET/HEAD answers 304: `*` matches any
    existing file; otherwise any listed tag matches by the weak comparison (`W/"x"` matches `"x"`)."""
    if if_none_match is None:
        return False
    tags = [t for t in (part.strip() for part in if_none_match.split(",")) if t]
    return "*" in tags or any(_opaque(t) == _opaque(etag) for t in tags)
