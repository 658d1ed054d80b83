"""`scaleot`: the data owner's command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from data_owner_client.commands import adapters, config, data, emulators, evals
from data_owner_client.commands.common import err, fail
from shared.progress import progress

app = typer.Typer(help="ScaleOT data-owner tools: get an emulator, tune the adapter locally on private data, "
                  "upload only the adapter, evaluate and generate.", no_args_is_help=True)
app.add_typer(config.app, name="config")
app.add_typer(emulators.app, name="emulators")
app.add_typer(adapters.app, name="adapters")
app.add_typer(evals.app, name="evals")
app.add_typer(data.app, name="data")
app.command("generate")(evals.generate)


@app.callback()
def main() -> None:
    """ScaleOT data-owner tools."""


@app.command("train")
def train(
    emulator: Annotated[Path, typer.Option(help="downloaded emulator directory (verified before use)")],
    data: Annotated[Path, typer.Option(help="training JSONL: {context, target} or {text} rows")],
    out: Annotated[Path, typer.Option(help="adapter output directory")],
    valid: Annotated[Path | None, typer.Option(help="validation JSONL (same format); picks the best epoch")] = None,
    mode: Annotated[str, typer.Option(help="full (all adapter-block parameters) or lora")] = "full",
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    lr: Annotated[float | None, typer.Option(help="peak learning rate (default 5e-5 full, 1e-3 lora)")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    grad_accum: Annotated[int, typer.Option(min=1, help="micro-batches per optimiser step")] = 1,
    max_len: Annotated[int, typer.Option(min=8, help="tokens per example")] = 256,
    max_steps: Annotated[int | None, typer.Option(min=1, help="stop after this many optimiser steps")] = None,
    seed: int = 0,
    lora_base: Annotated[str | None, typer.Option(
        help="LoRA only: base_model_name_or_path to write into adapter_config.json, where PEFT users load the "
        "full model from (default ./<base model>, relative to the model owner's prepared-models folder)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Tune the emulator's adapter blocks on private data; writes an adapter keyed by full-model blocks."""
    from data_owner_client.tuning.config import TuningConfig
    from data_owner_client.tuning.local import train_adapter
    from data_owner_client.tuning.trainer import TuningProgress
    from shared.artifacts import ArtifactError
    from shared.data_formats import DataFormatError, load_training_jsonl

    if mode not in ("full", "lora"):
        fail(f"--mode must be full or lora, not {mode!r}")
    chosen: Literal["full", "lora"] = "full" if mode == "full" else "lora"
    try:
        config = TuningConfig(mode=chosen, epochs=epochs, lr=lr or (5e-5 if chosen == "full" else 1e-3),
                              batch_size=batch_size, grad_accum=grad_accum, max_len=max_len, max_steps=max_steps,
                              seed=seed, lora_base_path=lora_base)
        train_rows = load_training_jsonl(data)
        valid_rows = load_training_jsonl(valid) if valid is not None else None
    except (DataFormatError, ValidationError, OSError) as exc:
        fail(str(exc).replace("\n", " "))
        return
    columns = (TextColumn("tuning adapter"), BarColumn(), MofNCompleteColumn(),
               TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.3f}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with progress(err, "tuning adapter", columns, epoch=0, loss=float("nan")) as reporter:

            def report(p: TuningProgress) -> None:
                reporter.update(p.step, total=p.total, epoch=p.epoch, loss=p.loss)

            result = train_adapter(emulator, train_rows, valid_rows, config, out, on_progress=report)
    except ArtifactError as exc:
        fail(str(exc))
        return
    summary = {"adapter_dir": str(out), "mode": chosen, "best_epoch": result.best_epoch, "steps": result.steps,
               "tokens_per_second": round(result.tokens_per_second, 1),
               "valid_loss": [e.valid_loss for e in result.epochs]}
    typer.echo(json.dumps(summary, indent=2) if as_json else
               f"adapter written to {out} (best epoch {result.best_epoch}, {result.tokens_per_second:.0f} tokens/s)")
