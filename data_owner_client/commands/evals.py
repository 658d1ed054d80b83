"""`scaleot evals run|status|show` and `scaleot generate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from data_owner_client.client import ScaleOTClient
from data_owner_client.commands.common import (
    EXIT_USAGE,
    JsonOpt,
    KeyOpt,
    ProfileOpt,
    UrlOpt,
    connect,
    emit,
    fail,
    out,
    wait_with_progress,
)
from shared.api import EvaluationOut
from shared.job_outcomes import MATRIX_ROWS, JobState

app = typer.Typer(help="Evaluate an uploaded adapter (the Offsite-Tuning matrix).", no_args_is_help=True)



def matrix_table(evaluation: EvaluationOut) -> Table:
    result = evaluation.result
    metric = result.metric if result is not None else "acc"
    table = Table("row", metric, "± stderr", "acc_norm", "n", title=f"{evaluation.task} ({evaluation.id})")
    if result is None:
        return table
    scale = 100 if metric == "acc" else 1
    for key, label in MATRIX_ROWS.items():
        row = result.rows.get(key)
        if row is None:
            continue
        stderr = "" if row.stderr is None else f"{scale * row.stderr:.1f}"
        norm = "" if row.acc_norm is None else f"{100 * row.acc_norm:.1f}"
        table.add_row(label, f"{scale * row.value:.1f}", stderr, norm, str(row.n))
    for name, gap in (("privacy gap", result.privacy_gap), ("utility gap", result.utility_gap)):
        if gap is not None:
            table.add_row(name, f"{gap:+.1f}", "", "", "")
    return table


def _show(evaluation: EvaluationOut) -> None:
    s = evaluation.status
    if s.state == JobState.succeeded:
        out.print(matrix_table(evaluation))
    else:
        out.print(f"{evaluation.id}: {s.state} {100 * s.progress:.0f}% {s.message}"
                  + (f" error: {s.error}" if s.error else ""))


def _wait(client: ScaleOTClient, evaluation_id: str) -> EvaluationOut:
    return wait_with_progress(f"evaluating {evaluation_id}",
                              lambda show: client.wait_evaluation(evaluation_id, on_status=show))


@app.command("run")
def run(
    adapter_id: str,
    task: Annotated[str | None, typer.Option(help="built-in task (see GET /v1/tasks)")] = None,
    data: Annotated[Path | None, typer.Option(help="your own multiple-choice JSONL instead of a task")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="first N test examples")] = None,
    wait: Annotated[bool, typer.Option(help="wait and print the matrix")] = True,
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Start an evaluation of an adapter on a task; prints the matrix when done."""
    if (task is None) == (data is None):
        fail("give exactly one of --task NAME or --data FILE.jsonl", EXIT_USAGE)
    with connect(url, api_key, profile) as client:
        evaluation = client.run_evaluation(adapter_id, task=task, data=data, limit=limit)
        if wait:
            evaluation = _wait(client, evaluation.id)
    emit(as_json, evaluation, lambda: _show(evaluation))
    if evaluation.status.state in (JobState.failed, JobState.cancelled):
        raise typer.Exit(1)


@app.command("status")
def status(evaluation_id: str, url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None,
           as_json: JsonOpt = False) -> None:
    """State and progress of an evaluation."""
    with connect(url, api_key, profile) as client:
        evaluation = client.evaluation(evaluation_id)
    emit(as_json, evaluation, lambda: _show(evaluation))


@app.command("show")
def show(evaluation_id: str, url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None,
         as_json: JsonOpt = False) -> None:
    """The evaluation matrix as a table (waits if it is still running)."""
    with connect(url, api_key, profile) as client:
        evaluation = _wait(client, evaluation_id)
    emit(as_json, evaluation, lambda: _show(evaluation))


def generate(
    adapter_id: str,
    prompt: Annotated[str, typer.Option(help="prompt text")],
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.0,
    chat: Annotated[bool, typer.Option(help="use the model's chat template")] = False,
    url: UrlOpt = None, api_key: KeyOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Generate text with the full model plugged with your adapter (on the owner's server)."""
    with connect(url, api_key, profile) as client:
        result = client.generate(adapter_id, prompt, max_new_tokens, temperature, chat)
    # a chat reply is a separate turn; a plain completion continues the prompt
    shown = result.completion if chat else result.prompt + result.completion
    emit(as_json, result, lambda: out.print(shown))
