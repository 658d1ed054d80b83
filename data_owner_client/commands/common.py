"""Shared CLI plumbing: connection options, one-line errors with meaningful exit codes, JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from pydantic_core import to_jsonable_python
from rich.console import Console

from data_owner_client.client import ApiError, ClientError, J, ScaleOTClient
from data_owner_client.settings import resolve

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

# exit codes: 1 server said no (4xx/5xx), 2 bad usage/input, 3 cannot reach the server, 4 verification failed
EXIT_API, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_VERIFY = 1, 2, 3, 4

UrlOpt = Annotated[str | None, typer.Option("--url", help="server URL (env SCALEOT_URL)")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (env SCALEOT_API_KEY)")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="named profile from `scaleot config`")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print a one-line error and exit with `code` (see the EXIT_* codes)."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@contextmanager
def connect(url: str | None, api_key: str | None, profile: str | None) -> Iterator[ScaleOTClient]:
    try:
        conn = resolve(url, api_key, profile)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    with ScaleOTClient(conn.url, conn.api_key) as client:
        try:
            yield client
        except ApiError as exc:
            hint = {401: " (check --api-key / SCALEOT_API_KEY)", 404: " (unknown id, or not yours)"}.get(exc.status, "")
            fail(f"{exc}{hint}", EXIT_API)
        except ClientError as exc:
            fail(str(exc), EXIT_UNREACHABLE if "cannot reach" in str(exc) else EXIT_VERIFY)


def wait_with_progress(label: str, wait: Callable[[Callable[[J], None]], J]) -> J:
    """Run `wait(on_status)` showing the job's state, message and progress: a bar on a terminal, plain
    lines (state, message, percent, elapsed, estimate) without one (CI, nohup, output to a file)."""
    from rich.progress import BarColumn, TextColumn

    from shared.progress import progress

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    with progress(err, label, columns, total=1.0, unit=None) as reporter:

        def show(item: J) -> None:
            status = item.status
            reporter.update(status.progress, description=f"{status.state}: {status.message or label}")

        return wait(show)


def emit(as_json: bool, payload: Any, human: Callable[[], None]) -> None:
    """`--json`: the payload (answers of the service are the contract's models) as JSON; else `human()`."""
    if as_json:
        typer.echo(json.dumps(to_jsonable_python(payload), indent=2))
    else:
        human()
