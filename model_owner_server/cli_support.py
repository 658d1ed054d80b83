"""What the model owner's command lines share (`scaleot-server` and its `bench` group): the error
console and one-line user errors, and stage 1 with a progress bar or plain lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

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
from model_owner_server.emulators.stage1 import Stage1Progress
from shared.assets import AssetError
from shared.blocks import UnsupportedModelError
from shared.progress import ProgressReporter, progress

err = Console(stderr=True, soft_wrap=True)
USER_ERRORS = (base_models.BaseModelError, UnsupportedModelError, AssetError, ValidationError, ValueError)


def one_line(exc: Exception) -> str:
    """A user error as one line (pydantic errors name the field and what it must be)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors())
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


def stage1_with_progress(base: base_models.LoadedBase, config: Stage1Config) -> ImportanceProfile:
    from model_owner_server.emulators.profile import find_profile
    from model_owner_server.emulators.stage1 import base_profile_id, ensure_profile

    pid = base_profile_id(base, config)
    with profile_lock_noting(pid):
        cached = find_profile(pid)
        if cached is not None:
            err.print(f"using cached stage-1 profile {cached.meta.profile_id}")
            return cached
        with stage1_progress(config) as reporter:
            return ensure_profile(base, config, on_progress=stage1_report(reporter))


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
        reporter.update(p.step, total=p.total, loss=p.loss, reward=p.reward)

    return report


@contextmanager
def profile_lock_noting(pid: str) -> Iterator[None]:
    """The profile's lock (one stage-1 run per profile across processes), saying so if it has to wait."""
    from model_owner_server.emulators.profile_lock import profile_lock

    with profile_lock(pid, on_wait=lambda: err.print(f"another process is training profile {pid}; waiting")):
        yield
