"""Progress for the command lines, with or without a terminal.

On a terminal: a rich progress bar. Without one (output redirected to a file, CI, nohup), a rich
bar prints nothing until it ends, so a long run (a cold stage 1 takes many minutes) looks hung.
There we print one plain line at a modest interval instead:

    stage 1 (Dynamic LayerReplace): step 40/200 (20%), elapsed 2m10s, about 8m40s left, loss 3.210

`SCALEOT_PROGRESS` chooses: `auto` (default: bar on a terminal, lines otherwise), `plain` (lines
always), `bar` (rich always). `SCALEOT_PROGRESS_INTERVAL` is the seconds between plain lines
(default 30); the first update and the end are always printed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.progress import Progress, ProgressColumn

DEFAULT_INTERVAL = 30.0
_NUMBER = re.compile(r"[\d.]+")


class ProgressReporter(Protocol):
    def update(self, completed: float, total: float | None = None, description: str | None = None,
               **fields: Any) -> None: ...


def duration(seconds: float) -> str:
    """1h02m, 2m05s, 7s."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _field(name: str, value: Any) -> str:
    return f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"


class PlainProgress:
    """Progress as plain lines: count, percent, elapsed and an estimate of the time left."""

    def __init__(self, label: str, total: float | None, console: Console, unit: str | None = "step",
                 interval: float = DEFAULT_INTERVAL, count: Callable[[float], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.console, self.unit = label, total, console, unit
        self.interval, self.clock = interval, clock
        self.count = count or (lambda n: f"{n:g}")
        self.started = clock()
        # (time, completed) the rate is measured from: the first update that showed progress in the current
        # phase, so that minutes spent before the first step (stage 1's initialisation) or in an earlier
        # phase are not taken for step time
        self.first: tuple[float, float] | None = None
        self.phase: str | None = None
        self.progressed = False
        self.last_line: float | None = None
        self.finished = False

    def update(self, completed: float, total: float | None = None, description: str | None = None,
               **fields: Any) -> None:
        now = self.clock()
        self.total = total if total is not None else self.total
        self._anchor(now, completed, description)
        done = self.total is not None and completed >= self.total
        due = self.last_line is None or now - self.last_line >= self.interval
        if self.finished or not (due or done):
            return
        self.last_line, self.finished = now, done
        self.console.file.write(self.line(completed, now, description, fields) + "\n")
        self.console.file.flush()

    def line(self, completed: float, now: float, description: str | None, fields: dict[str, Any]) -> str:
        percent = f"{100 * completed / self.total:.0f}%" if self.total else None
        if self.unit is None:  # a fraction of a job: the percentage says it all
            head = percent or ""
        else:
            head = " ".join(filter(None, [self.unit, self.count(completed)]))
            head += f"/{self.count(self.total)} ({percent})" if self.total else ""
        parts = [f"{description or self.label}: {head}"]
        parts.append(f"elapsed {duration(now - self.started)}")
        left = self.seconds_left(completed, now)
        if left is not None:
            parts.append(f"about {duration(left)} left")
        parts += [_field(k, v) for k, v in fields.items()]
        return ", ".join(parts)

    def _anchor(self, now: float, completed: float, description: str | None) -> None:
        """Move the rate's starting point: to the first update of a new phase (the description's first two
        colon-separated parts without their numbers, e.g. "running: stage 1 step 5/150" is the training
        steps whatever the step), then once more to the first update with progress in it."""
        phase = ":".join(_NUMBER.sub("", description or self.label).split(":")[:2])
        if self.first is None or phase != self.phase:
            self.first, self.phase, self.progressed = (now, completed), phase, False
        elif not self.progressed and completed > self.first[1]:
            self.first, self.progressed = (now, completed), True  # time up to here was not step time

    def seconds_left(self, completed: float, now: float) -> float | None:
        if not self.total or self.first is None:
            return None
        since, start = now - self.first[0], self.first[1]
        if completed >= self.total:
            return 0.0
        if not self.progressed or completed <= start or since <= 0:
            return None
        return since / (completed - start) * (self.total - completed)


class _RichReporter:
    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress, self.task = progress, task

    def update(self, completed: float, total: float | None = None, description: str | None = None,
               **fields: Any) -> None:
        extra: dict[str, Any] = {"description": description} if description is not None else {}
        if total is not None:
            extra["total"] = total
        self.progress.update(self.task, completed=completed, **extra, **fields)


def plain_wanted(console: Console) -> bool:
    mode = os.environ.get("SCALEOT_PROGRESS", "auto").strip().lower()
    return mode == "plain" or (mode != "bar" and not console.is_terminal)


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SCALEOT_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


@contextmanager
def progress(console: Console, label: str, columns: Sequence[ProgressColumn], total: float | None = None,
             unit: str | None = "step", count: Callable[[float], str] | None = None, transient: bool = False,
             **fields: Any) -> Iterator[ProgressReporter]:
    """A reporter: a rich bar of `columns` on a terminal, else `PlainProgress` lines on the same stream.
    `unit` names what is counted ("step"; "" for a bare count such as bytes; None for a fraction of a job,
    shown as a percentage). `fields` are the bar's initial task fields (e.g. loss); plain lines print
    those an update passes."""
    if plain_wanted(console):
        yield PlainProgress(label, total, console, unit=unit, interval=interval(), count=count)
        return
    with Progress(*columns, console=console, transient=transient) as bar:
        yield _RichReporter(bar, bar.add_task(label, total=total, **fields))


@contextmanager
def activity(console: Console, text: str, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """A step of unknown length: a spinner on a terminal; without one, a line when it starts and
    one when it ends (a spinner alone prints nothing there, so the wait looks hung)."""
    if not plain_wanted(console):
        with console.status(text):
            yield
        return
    started = clock()
    console.print(f"{text} ...", highlight=False)
    yield
    console.print(f"{text}: done in {duration(clock() - started)}", highlight=False)
