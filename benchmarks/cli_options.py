"""Options shared by several `scaleot-bench` commands: one definition each, the same help everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_MODEL = "smollm2-135m"
RESULTS = Path("results")

ModelOption = Annotated[str, typer.Option(help="base model")]
OutOption = Annotated[Path, typer.Option(help="results folder")]
ThreadsOption = Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's)")]
RestartOption = Annotated[bool, typer.Option(help="discard the run's saved state and start over")]
NTrainOption = Annotated[int | None, typer.Option(help="override training examples per task")]
NTestOption = Annotated[int | None, typer.Option(help="override test examples per task (default: whole split)")]
AdapterOption = Annotated[str, typer.Option(help="adapter split BOTTOM,TOP: the first and last blocks the data owner "
                                                 "tunes (the stage-1 profile is the one of that split)")]
