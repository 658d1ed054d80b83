"""The client's errors, below both the HTTP client and the download (which raise them)."""

from __future__ import annotations

from typing import Any


class ClientError(RuntimeError):
    """The client could not talk to the service (unreachable, timeout)."""


class ApiError(ClientError):
    def __init__(self, status: int, detail: Any, url: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status} from {url}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    """FastAPI details are strings, lists of pydantic errors, or lists of problems: one line."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {format_detail(v)}" for k, v in detail.items())
    return str(detail)
