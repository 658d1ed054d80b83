"""`scaleot-server bench ...`: benchmarks that print a table and write JSON + markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(help="Benchmarks (print a table, write JSON + markdown).", no_args_is_help=True)


@bench_app.command("emulators")
def bench_emulators(
    model: Annotated[str, typer.Option(help="base model")] = "smollm2-135m",
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    stage1_steps: Annotated[int | None, typer.Option(help="stage-1 steps (default config otherwise)")] = None,
    n_windows: Annotated[int, typer.Option(help="perplexity windows per corpus")] = 24,
    window: Annotated[int, typer.Option(help="tokens per window")] = 256,
    quick: Annotated[bool, typer.Option(help="alpha 0.5 only, beta 0 and 0.5, no ablations")] = False,
) -> None:
    """Emulator perplexity (held-out calibration, KJV), size and build time: scaleot vs uniform vs full."""
    from model_owner_server import base_models
    from model_owner_server.bench import emulator_quality
    from model_owner_server.cli import stage1_with_progress
    from model_owner_server.emulators.profile import Stage1Config

    config = Stage1Config() if stage1_steps is None else Stage1Config(steps=stage1_steps)
    profile = stage1_with_progress(base_models.load_base_model(model), config)
    alphas = (0.5,) if quick else emulator_quality.ALPHAS
    result = emulator_quality.run(
        model, profile, out, alphas=alphas, window=window, n_windows=n_windows, ablations=not quick
    )
    typer.echo(emulator_quality.markdown(result))


@bench_app.command("paper-table")
def bench_paper_table(
    model: Annotated[str, typer.Option(help="base model")] = "smollm2-135m",
    tasks: Annotated[str, typer.Option(help="comma-separated built-in tasks")] = "goal_step_wikihow_goal",
    alpha: Annotated[float, typer.Option(help="fraction of middle blocks replaced/dropped")] = 0.5,
    variants: Annotated[str, typer.Option(help="method:beta list")] = "uniform:0,scaleot:0,scaleot:0.5",
    quick: Annotated[bool, typer.Option(help="small budget: one epoch, 160 train / 100 test examples")] = False,
    n_train: Annotated[int | None, typer.Option(help="override training examples per task")] = None,
    n_test: Annotated[int | None, typer.Option(help="override test examples per task")] = None,
    epochs: Annotated[int | None, typer.Option(help="override tuning epochs")] = None,
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    label: Annotated[str | None, typer.Option(help="file name label (default: model + quick/full)")] = None,
) -> None:
    """Build emulators, tune on them and on the full model, evaluate the offsite-tuning matrix."""
    from model_owner_server import base_models
    from model_owner_server.bench import paper_table
    from model_owner_server.cli import fail, stage1_with_progress
    from model_owner_server.emulators.profile import Stage1Config
    from shared.tasks import TASKS

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        fail(f"unknown task(s) {unknown}; available: {', '.join(TASKS)}")
    try:
        parsed = [paper_table.Variant(m.split(":")[0], float(m.split(":")[1])) for m in variants.split(",")]
    except (IndexError, ValueError):
        fail(f"--variants must look like uniform:0,scaleot:0.5, not {variants!r}")
        return
    if any(v.method not in ("scaleot", "uniform") for v in parsed):
        fail("--variants methods must be scaleot or uniform")
    budget = paper_table.QUICK if quick else paper_table.FULL
    updates: dict[str, object] = {k: v for k, v in {"n_train": n_train, "n_test": n_test}.items() if v is not None}
    tuning = budget.tuning if epochs is None else budget.tuning.model_copy(update={"epochs": epochs})
    budget = paper_table.Budget(**{**budget.__dict__, **updates, "tuning": tuning})
    base = base_models.load_base_model(model)
    profile = stage1_with_progress(base, Stage1Config())
    result = paper_table.run(base, profile, names, alpha, parsed, budget, out,
                             label or f"{Path(model).name}-{'quick' if quick else 'full'}")
    typer.echo(paper_table.markdown(result))
