"""`scaleot config`: named server profiles (URL + API key)."""

from __future__ import annotations

from typing import Annotated

import typer

from data_owner_client.commands.common import EXIT_USAGE, JsonOpt, emit, fail, out
from data_owner_client.settings import config_path, read_config, resolve, write_config

app = typer.Typer(help="Server profiles (URL + API key), stored in the user's config folder.",
                  no_args_is_help=True)


@app.command("set")
def set_profile(
    url: Annotated[str | None, typer.Option(help="server URL, e.g. http://127.0.0.1:8000")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="your data-owner API key")] = None,
    profile: Annotated[str, typer.Option(help="profile name")] = "default",
    use: Annotated[bool, typer.Option(help="make it the current profile")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Create or update a profile."""
    try:
        data = read_config()
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
        return
    entry = dict(data["profiles"].get(profile, {}))
    if url is not None:
        if not url.startswith(("http://", "https://")):
            fail(f"--url must start with http:// or https://, not {url!r}", EXIT_USAGE)
        entry["url"] = url.rstrip("/")
    if api_key is not None:
        entry["api_key"] = api_key
    data["profiles"][profile] = entry
    if use:
        data["current"] = profile
    path = write_config(data)
    emit(as_json, {"profile": profile, "path": str(path)}, lambda: out.print(f"profile {profile} saved in {path}"))


@app.command("show")
def show(profile: Annotated[str | None, typer.Option(help="profile name")] = None, as_json: JsonOpt = False) -> None:
    """Show the effective settings (the API key is masked)."""
    try:
        conn = resolve(None, None, profile)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
        return
    masked = None if conn.api_key is None else conn.api_key[:6] + "..." + conn.api_key[-4:]
    payload = {"profile": conn.profile, "url": conn.url, "api_key": masked, "config": str(config_path())}
    emit(as_json, payload, lambda: out.print("\n".join(f"{k}: {v}" for k, v in payload.items())))
