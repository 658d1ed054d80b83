"""Where the CLI finds the server and the API key: options > environment > named profile.

Profiles live in `typer.get_app_dir("scaleot")/config.json` (override the folder with
`SCALEOT_CONFIG_DIR`), written with mode 0600 because they hold API keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from shared.atomic import atomic_write_text

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    folder = os.environ.get("SCALEOT_CONFIG_DIR") or typer.get_app_dir("scaleot")
    return Path(folder) / "config.json"


def read_config() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {"current": "default", "profiles": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
    data.setdefault("current", "default")
    data.setdefault("profiles", {})
    return dict(data)


def write_config(data: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2), mode=0o600)  # it holds API keys
    return path


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str | None
    profile: str


def resolve(url: str | None, api_key: str | None, profile: str | None) -> Connection:
    data = read_config()
    name = profile or os.environ.get("SCALEOT_PROFILE") or data["current"]
    if profile and profile not in data["profiles"]:
        raise ValueError(f"no profile {profile!r}; create it with `scaleot config set --profile {profile} --url ...`")
    stored = data["profiles"].get(name, {})
    return Connection(
        url=url or os.environ.get("SCALEOT_URL") or stored.get("url") or DEFAULT_URL,
        api_key=api_key or os.environ.get("SCALEOT_API_KEY") or stored.get("api_key"),
        profile=name,
    )
