"""`scaleot data export`: write a built-in public task as JSONL files to stand in for private data
(demos, trying the workflow). Real data owners bring their own JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from data_owner_client.commands.common import EXIT_USAGE, JsonOpt, emit, fail, out

app = typer.Typer(help="Built-in public task data as JSONL (to try the workflow).", no_args_is_help=True)


@app.command("export")
def export(
    task: Annotated[str, typer.Argument(help="built-in task name")],
    split: Annotated[str, typer.Option(help="train, validation or test")] = "train",
    limit: Annotated[int | None, typer.Option(min=1, help="first N examples")] = None,
    fmt: Annotated[str, typer.Option("--format", help="training ({context,target}) or mc ({context,choices,label})")]
    = "training",
    out_path: Annotated[Path, typer.Option("--out", help="output JSONL file")] = Path("data.jsonl"),
    as_json: JsonOpt = False,
) -> None:
    """Export a split of a built-in task."""
    from shared.assets import AssetError
    from shared.data_formats import MCExample, TrainExample, write_mc_jsonl, write_training_jsonl
    from shared.tasks import as_training_examples, load_task

    if split not in ("train", "validation", "test") or fmt not in ("training", "mc"):
        fail("--split must be train, validation or test and --format training or mc", EXIT_USAGE)
    try:
        data = load_task(task)
    except (KeyError, ValueError, AssetError) as exc:
        fail(str(exc).strip("'\""), EXIT_USAGE)
        return
    rows = list(getattr(data, split))[:limit]
    mc = [r for r in rows if isinstance(r, MCExample)]
    if fmt == "mc":
        if len(mc) != len(rows):
            fail(f"{task} is not a multiple-choice task; use --format training", EXIT_USAGE)
        write_mc_jsonl(out_path, mc)
    else:
        training = as_training_examples(mc) if mc else [r for r in rows if isinstance(r, TrainExample)]
        write_training_jsonl(out_path, training)
    emit(as_json, {"task": task, "split": split, "rows": len(rows), "path": str(out_path)},
         lambda: out.print(f"{len(rows)} {split} rows of {task} written to {out_path}"))
