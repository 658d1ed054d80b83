"""What the model owner's command lines share (`scaleot-server` and its `bench` group): the error
console and one-line user errors, and stage 1 with a progress bar or plain lines."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from model_owner_server import base_models
from model_owner_server.emulators.profile import ImportanceProfile, Stage1Config
from model_owner_server.emulators.stage1 import INITIALISATION, Stage1Progress
from shared.assets import AssetError
from shared.blocks import UnsupportedModelError
from shared.progress import ProgressReporter, progress

err = Console(stderr=True, soft_wrap=True)
USER_ERRORS = (base_models.BaseModelError, UnsupportedModelError, AssetError, ValidationError, ValueError)


def one_line(exc: Exception, field_prefix: str = "") -> str:
    """A user error as one line: pydantic errors name the field (`field_prefix` + its upper-case name for
    settings, e.g. SCALEOT_MODELS) and what it must be; a rule over several fields is its message alone."""
    if isinstance(exc, ValidationError):
        def where(loc: tuple[int | str, ...]) -> str:
            if not loc:
                return ""
            head = f"{field_prefix}{str(loc[0]).upper()}" if field_prefix else str(loc[0])
            return head + "".join(f"[{p!r}]" for p in loc[1:]) + ": "

        return "; ".join(where(e["loc"]) + e["msg"].removeprefix("Value error, ") for e in exc.errors())
    return str(exc).replace("\n", " ")


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


STAGE1_LABEL = "stage 1 (Dynamic LayerReplace)"


def _stage1_columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn(STAGE1_LABEL),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f} reward {task.fields[reward]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


STAGE1_HELP = ("stage-1 settings as a JSON object of Stage1Config fields, e.g. '{\"steps\": 40, \"batch_size\": 2}' "
               "(part of the profile and emulator ids; unset: the measured defaults)")
Stage1Option = Annotated[str, typer.Option("--stage1", help=STAGE1_HELP)]


def stage1_with_progress(base: base_models.LoadedBase | str, config: Stage1Config, nproc: int = 1,
                         device: str = "cpu", texts: list[str] | None = None) -> ImportanceProfile:
    """`obtain_profile` with a progress bar (plain lines without a terminal) and its notices on stderr."""
    from model_owner_server.emulators.obtain import obtain_profile

    with ExitStack() as opened:
        report: list[Callable[[Stage1Progress], None]] = []

        def start() -> None:  # no bar for a cached profile
            report.append(stage1_report(opened.enter_context(stage1_progress(config))))

        return obtain_profile(base, config, nproc=nproc, device=device, on_start=start,
                              on_progress=lambda p: report[0](p), on_notice=err.print, texts=texts)


def stage1_progress(config: Stage1Config) -> AbstractContextManager[ProgressReporter]:
    """A bar on a terminal, plain lines (step, percent, elapsed, estimate) without one."""
    return progress(err, STAGE1_LABEL, _stage1_columns(), total=config.steps, loss=float("nan"),
                    reward=float("nan"))


def stage2_columns() -> list[ProgressColumn]:
    """Stage 2 is quick unless it re-fits harmonizers (SRC) or distils (OT-KD): those report a fraction."""
    return [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
            TimeRemainingColumn()]


def stage1_report(reporter: ProgressReporter) -> Callable[[Stage1Progress], None]:
    def report(p: Stage1Progress) -> None:
        # the phase in the plain line's description: the estimate restarts when the steps begin
        phase = STAGE1_LABEL if p.phase != INITIALISATION else (
            f"{STAGE1_LABEL}: initialisation (caching activations, fitting the harmonizers; minutes)")
        reporter.update(p.step, total=p.total, description=phase, loss=p.loss, reward=p.reward)

    return report
