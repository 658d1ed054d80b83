"""Helpers of the dashboard tests: sign in through the form, read a page's CSRF token, a small frontier file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
XSS = '<script>alert("owned")</script><img src=x onerror=alert(1)>'


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:2000]
    return found.group(1)


def sign_in(client: TestClient | httpx.Client, key: str) -> str:
    """Sign in with `key` through the form; returns the session's CSRF token."""
    form = client.get("/ui/login")
    assert form.status_code == 200, form.text
    answer = client.post("/ui/login", data={"key": key, "csrf": csrf_of(form.text)}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    overview = client.get("/ui")
    assert overview.status_code == 200, overview.text
    return csrf_of(overview.text)


def frontier_file(path: Path, model: str) -> Path:
    def point(alpha: float, beta: float, privacy: float, utility: float) -> dict[str, object]:
        return {"variant": f"a{alpha}-b{beta}", "method": "scaleot", "alpha": alpha, "beta": beta,
                "privacy_gap": {"mean": privacy, "ci95": [privacy - 1.5, privacy + 1.5]},
                "utility_gap": {"mean": utility, "ci95": [utility - 1.0, utility + 1.0]}, "plug_in": {"mean": 61.0}}

    points = [point(0.25, 0.0, 2.0, 0.5), point(0.5, 0.0, 5.0, 1.0), point(0.75, 0.5, 9.0, 3.0),
              {"method": "uniform", "alpha": 0.5, "beta": 0.0}]
    path.write_text(json.dumps({"benchmark": "frontier", "model": model, "tasks": ["winowhy"], "points": points}))
    return path
