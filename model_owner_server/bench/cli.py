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
