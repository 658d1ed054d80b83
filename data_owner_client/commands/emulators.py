"""`scaleot emulators recommend|request|status|list|download|check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
from rich.table import Table

from data_owner_client.client import ScaleOTClient
from data_owner_client.commands.common import (
    JsonOpt,
    KeyOpt,
    ProfileOpt,
    UrlOpt,
    connect,
    emit,
    err,
    out,
    wait_with_progress,
)
from data_owner_client.download import DownloadProgress
from shared.api import EmulatorOut
from shared.job_outcomes import JobState
from shared.progress import progress

app = typer.Typer(help="Request, watch and download emulators.", no_args_is_help=True)


def _line(e: EmulatorOut) -> str:
    s = e.status
    extra = f" ({s.message})" if s.message else ""
    error = f" error: {s.error}" if s.error else ""
    return f"{e.id} {e.method} on {e.base_model}: {s.state} {100 * s.progress:.0f}%{extra}{error}"


def _wait(client: ScaleOTClient, emulator_id: str) -> EmulatorOut:
    return wait_with_progress(f"building {emulator_id}",
                              lambda show: client.wait_emulator(emulator_id, on_status=show))


@app.command("recommend")
def recommend(
    base_model: Annotated[str, typer.Option("--model", help="base model name (see GET /v1/models)")],
    privacy_gap: Annotated[float, typer.Option(
        help="wanted privacy gap: how much worse (points) a model tuned on the emulator alone must be than the "
             "plug-in")],
    conservative: Annotated[bool, typer.Option(help="the gap's 95% CI lower end, not its mean, must reach it")] = False,
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """The (alpha, beta) the model owner recommends for a privacy gap, from the frontier it measured."""
    with connect(url, api_key, profile) as client:
        r = client.recommendation(base_model, privacy_gap, conservative)

    def human() -> None:
        pg, ug = r.privacy_gap, r.utility_gap
        out.print(f"alpha {r.alpha:g}, beta {r.beta:g}: privacy gap {pg.mean:+.1f} [{pg.ci95[0]:+.1f}, "
                  f"{pg.ci95[1]:+.1f}], utility gap {ug.mean:+.1f} [{ug.ci95[0]:+.1f}, {ug.ci95[1]:+.1f}] points "
                  f"(measured on {', '.join(r.tasks) or 'the owner tasks'})")
        if r.caveat:
            out.print(f"note: {r.caveat}")
        out.print(f"scaleot emulators request --model {r.model} --method {r.method} --alpha {r.alpha:g} "
                  f"--beta {r.beta:g} --adapter-bottom {r.adapter_bottom} --adapter-top {r.adapter_top}")

    emit(as_json, r, human)


@app.command("request")
def request(
    base_model: Annotated[str, typer.Option("--model", help="base model name (see GET /v1/models)")],
    method: Annotated[str, typer.Option(help="scaleot or uniform")] = "scaleot",
    alpha: Annotated[float, typer.Option(help="fraction of middle blocks replaced")] = 0.5,
    beta: Annotated[float, typer.Option(help="fraction of attention rank removed (SRC)")] = 0.0,
    adapter_bottom: int = 2,
    adapter_top: int = 2,
    calibrate: Annotated[Path | None, typer.Option(
        help='unlabelled prompts like yours (JSONL rows {"context": str, "choices": [str, ...]}, no labels): the '
             "model owner refines the emulator on them so adapters tuned on it transfer better; it learns the "
             "prompts (never the answers) and the emulator is yours alone")] = None,
    privacy_gap: Annotated[float | None, typer.Option(
        help="request the (method, alpha, beta, adapter split) the model owner recommends for this privacy gap "
             "(see `recommend`) instead of --method/--alpha/--beta/--adapter-*")] = None,
    wait: Annotated[bool, typer.Option(help="wait until it is built, showing progress")] = False,
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Ask the model owner for an emulator (the same parameters return the same emulator)."""
    spec: dict[str, object] = {"base_model": base_model, "method": method, "alpha": alpha, "beta": beta,
                               "adapter_bottom": adapter_bottom, "adapter_top": adapter_top}
    if calibrate is not None and not calibrate.is_file():
        err.print(f"--calibrate: no such file {calibrate}")
        raise typer.Exit(2)
    with connect(url, api_key, profile) as client:
        if privacy_gap is not None:
            r = client.recommendation(base_model, privacy_gap)
            spec.update(method=r.method, alpha=r.alpha, beta=r.beta, adapter_bottom=r.adapter_bottom,
                        adapter_top=r.adapter_top)
            err.print(f"recommended for a privacy gap of {privacy_gap:g}: {r.method} alpha {r.alpha:g}, beta "
                      f"{r.beta:g} (privacy gap {r.privacy_gap.mean:+.1f}, utility gap {r.utility_gap.mean:+.1f} "
                      f"points on {', '.join(r.tasks) or 'the owner tasks'})")
        if calibrate is not None:
            spec["calibration_prompts"] = client.upload_prompt_set(calibrate).id
        emulator = client.request_emulator(spec)
        if wait:
            emulator = _wait(client, emulator.id)
    emit(as_json, emulator, lambda: out.print(_line(emulator)))
    if emulator.status.state in (JobState.failed, JobState.cancelled):
        raise typer.Exit(1)


@app.command("status")
def status(
    emulator_id: str,
    wait: Annotated[bool, typer.Option(help="wait until it is built")] = False,
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """State, progress and error of one emulator."""
    with connect(url, api_key, profile) as client:
        emulator = _wait(client, emulator_id) if wait else client.emulator(emulator_id)
    emit(as_json, emulator, lambda: out.print(_line(emulator)))


@app.command("list")
def list_emulators(url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Your emulators."""
    with connect(url, api_key, profile) as client:
        items = client.emulators()

    def table() -> None:
        t = Table("id", "model", "method", "alpha", "beta", "state")
        for e in items:
            t.add_row(e.id, e.base_model, e.method, str(e.spec.get("alpha")), str(e.spec.get("beta")),
                      e.status.state)
        out.print(t)

    emit(as_json, items, table)


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


@app.command("download")
def download(
    emulator_id: str,
    out_dir: Annotated[Path, typer.Option("--out", help="target directory")],
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Download (resuming an interrupted download), verify every sha256, rename into place."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with connect(url, api_key, profile) as client, progress(err, f"downloading {emulator_id}", columns, unit="",
                                                            count=megabytes) as reporter:

        def show(p: DownloadProgress) -> None:
            reporter.update(p.done, total=p.total, description=p.name)

        result = client.download_emulator(emulator_id, out_dir, on_progress=show)
    resumed = sum(result.resumed.values())
    note = f" (resumed {resumed} bytes from an interrupted download)" if resumed else ""
    emit(as_json, {"emulator_id": emulator_id, "path": str(result.path), "verified": True,
                   "resumed": result.resumed, "downloaded_bytes": result.downloaded},
         lambda: out.print(f"{emulator_id} downloaded and verified in {result.path}{note}"))


@app.command("check")
def check(
    emulator_id: str,
    data: Annotated[Path, typer.Option("--data", help='unlabelled prompts: JSONL rows {"context": str, '
                                       '"choices": [str, ...]} (no label, no target)')],
    wait: Annotated[bool, typer.Option(help="wait for the verdict (--no-wait: print the check id)")] = True,
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Before tuning: does this emulator answer prompts like yours as the full model does? Prints the agreement,
    the mean KL and whether adapters tuned on it are likely to transfer (only aggregates come back)."""
    if not data.is_file():
        err.print(f"--data: no such file {data}")
        raise typer.Exit(2)
    with connect(url, api_key, profile) as client:
        result = client.check_agreement(emulator_id, data)
        if wait:
            result = wait_with_progress(f"checking {emulator_id}",
                                        lambda show: client.wait_agreement(result.id, on_status=show))

    def human() -> None:
        r = result.result
        if r is None:
            s = result.status
            error = f" error: {s.error}" if s.error else ""
            out.print(f"{result.id}: {s.state} {100 * s.progress:.0f}%{error}")
            return
        out.print(f"agreement {100 * r.agreement:.1f}% on {r.n_items} prompts, mean KL {r.mean_kl:.3f}: {r.verdict}")

    emit(as_json, result, human)
    if result.status.state in (JobState.failed, JobState.cancelled):
        raise typer.Exit(1)
