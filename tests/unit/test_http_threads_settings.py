"""`bench http --api-threads`: thread counts or THREADSxPROCESSES, parsed with an error naming the item."""

from __future__ import annotations

import pytest

from benchmarks.service_load.http_threads import markdown, parse_settings


def test_settings_are_threads_or_threads_x_processes() -> None:
    assert parse_settings("40, 8,4x2") == [(40, 1), (8, 1), (4, 2)]


@pytest.mark.parametrize(("text", "message"), [
    ("4,four", "'four' is not N or NxP"), ("4x", "'4x' is not N or NxP"), ("0", "'0' needs 1-256 threads"),
    ("4x17", "'4x17' needs 1-256 threads and 1-16 processes"), ("4,4x1", "distinct"), ("", "not N or NxP"),
])
def test_bad_settings_name_the_item(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_settings(text)


def test_the_table_has_a_row_per_setting_and_endpoint() -> None:
    rows = [{"api_threads": 4, "api_processes": p, "endpoint": "/v1/adapters", "p50_ms": 10.0 * p, "p99_ms": 20.0,
             "requests_per_s": 900.0} for p in (1, 2)]
    text = markdown({"database": "sqlite", "clients": 32, "requests_per_client": 60, "rounds": 3, "rows": rows})
    assert "| /v1/adapters | 4 | 1 | 10.0 | 20.0 | 900 |" in text
    assert "| /v1/adapters | 4 | 2 | 20.0 | 20.0 | 900 |" in text
