"""`scaleot adapters upload|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from data_owner_client.commands.common import JsonOpt, KeyOpt, ProfileOpt, UrlOpt, connect, emit, out

app = typer.Typer(help="Upload tuned adapters (weights only) and list them.", no_args_is_help=True)


@app.command("upload")
def upload(
    adapter_dir: Annotated[Path, typer.Argument(help="directory written by `scaleot train`")],
    emulator_id: Annotated[str | None, typer.Option(help="emulator it was tuned on (default: from the adapter)")]
    = None,
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Upload the adapter; the server checks it against the emulator's exact key set."""
    emulator_id = emulator_id or _emulator_of(adapter_dir)
    with connect(url, api_key, profile) as client:
        adapter = client.upload_adapter(emulator_id, adapter_dir)
    emit(as_json, adapter, lambda: out.print(f"{adapter.id} uploaded ({adapter.kind}, {adapter.size} bytes)"))


def _emulator_of(adapter_dir: Path) -> str:
    import json

    from data_owner_client.commands.common import EXIT_USAGE, fail

    log = adapter_dir / "training_log.json"
    if log.is_file():
        return str(json.loads(log.read_text())["emulator_id"])
    fail(f"{adapter_dir} has no training_log.json naming its emulator; pass --emulator-id", EXIT_USAGE)
    raise AssertionError


@app.command("list")
def list_adapters(url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Your uploaded adapters."""
    with connect(url, api_key, profile) as client:
        items = client.adapters()

    def table() -> None:
        t = Table("id", "emulator", "kind", "bytes")
        for a in items:
            t.add_row(a.id, a.emulator_id, a.kind, str(a.size))
        out.print(t)

    emit(as_json, items, table)
