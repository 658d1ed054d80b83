"""`scaleot-bench ...` (also `scaleot-server bench ...`): benchmarks that print a table and write JSON + markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmarks.cli_options import (
    DEFAULT_MODEL,
    RESULTS,
    AdapterOption,
    ModelOption,
    NTestOption,
    NTrainOption,
    OutOption,
    RestartOption,
    ThreadsOption,
)
from model_owner_server.cli_support import Stage1Option

app = typer.Typer(help="ScaleOT benchmarks: they play both parties; each prints a table and writes JSON + markdown.",
                  no_args_is_help=True)


@app.command("emulators")
def bench_emulators(
    model: ModelOption = DEFAULT_MODEL,
    out: OutOption = RESULTS,
    stage1: Stage1Option = "",
    n_windows: Annotated[int, typer.Option(help="perplexity windows per corpus")] = 24,
    window: Annotated[int, typer.Option(help="tokens per window")] = 256,
    quick: Annotated[bool, typer.Option(help="alpha 0.5 only, beta 0 and 0.5, no ablations")] = False,
) -> None:
    """Emulator perplexity (held-out calibration, KJV), size and build time: scaleot vs uniform vs full."""
    from benchmarks.emulator_quality import emulator_quality
    from model_owner_server import base_models
    from model_owner_server.cli_support import USER_ERRORS, fail, one_line, stage1_with_progress
    from model_owner_server.emulators.profile import stage1_config

    try:
        config = stage1_config(stage1, 2, 2)
    except USER_ERRORS as exc:
        fail(one_line(exc))
        return
    profile = stage1_with_progress(base_models.load_base_model(model), config)
    alphas = (0.5,) if quick else emulator_quality.ALPHAS
    result = emulator_quality.run(
        model, profile, out, alphas=alphas, window=window, n_windows=n_windows, ablations=not quick
    )
    typer.echo(emulator_quality.markdown(result))


@app.command("paper-table")
def bench_paper_table(
    model: ModelOption = DEFAULT_MODEL,
    tasks: Annotated[str | None, typer.Option(help="comma-separated built-in multiple-choice tasks (default: "
                                                   "the four standard tasks; --quick: goal_step_wikihow_goal)")] = None,
    alpha: Annotated[float, typer.Option(help="fraction of middle blocks replaced/dropped")] = 0.5,
    variants: Annotated[str, typer.Option(
        help="method:beta[:alpha][:calibrated] list; methods scaleot, uniform, ot-kd (uniform LayerDrop + "
             "distillation); ':calibrated' refines a scaleot emulator on the task's unlabelled training prompts"
    )] = "uniform:0,ot-kd:0,scaleot:0,scaleot:0.5",
    quick: Annotated[bool, typer.Option(help="small budget, one task (under 15 minutes on 2 cores)")] = False,
    n_train: NTrainOption = None,
    n_valid: Annotated[int | None, typer.Option(help="override validation examples (learning-rate selection)")] = None,
    n_test: NTestOption = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated tuning seeds (default 0,1)")] = None,
    lr_grid: Annotated[str | None, typer.Option(help="adapter-tuning learning rates to choose from")] = None,
    full_lr_grid: Annotated[str | None, typer.Option(help="full-parameter fine-tuning learning rates "
                                                          "('none': no full-parameter row)")] = None,
    epochs: Annotated[int | None, typer.Option(help="override tuning epochs")] = None,
    fidelity_batches: Annotated[int | None, typer.Option(help="batches for the fidelity metrics (0: skip)")] = None,
    out: OutOption = RESULTS,
    label: Annotated[str | None, typer.Option(help="file name label (default: model + quick/standard [+ "
                                                  "-adapterB+T])")] = None,
    adapter: AdapterOption = "2,2",
    restart: RestartOption = False,
    from_results: Annotated[Path | None, typer.Option(
        help="start from a committed paper-table JSON of the same model, profile and budget: only the variants "
             "it lacks run, paired with its rows on the same items and seeds")] = None,
) -> None:
    """Offsite-tuning matrix with paired CIs; resumable: the same command again skips finished tasks."""
    from benchmarks.offsite_tuning import options, paper_table
    from benchmarks.offsite_tuning.run_state import StateMismatchError
    from model_owner_server import base_models
    from model_owner_server.cli_support import fail, stage1_with_progress
    from model_owner_server.emulators.profile import Stage1Config

    try:
        names = options.parse_tasks(tasks or ",".join(paper_table.QUICK_TASKS if quick else paper_table.STANDARD_TASKS))
        parsed = options.parse_variants(variants, alpha)
        budget = options.override_budget(
            paper_table.QUICK if quick else paper_table.STANDARD, n_train=n_train, n_valid=n_valid, n_test=n_test,
            seeds=seeds, lr_grid=lr_grid, full_lr_grid=full_lr_grid, epochs=epochs, fidelity_batches=fidelity_batches)
        split = options.parse_adapter(adapter)
    except ValueError as exc:
        fail(str(exc))
        return
    base = base_models.load_base_model(model)
    profile = stage1_with_progress(base, Stage1Config(adapter_bottom=split[0], adapter_top=split[1]))
    run_label = label or f"{Path(model).name}-{'quick' if quick else 'standard'}{options.adapter_label(split)}"
    try:
        result = paper_table.run(base, profile, names, parsed, budget, out, run_label, restart=restart,
                                 from_results=from_results)
    except StateMismatchError as exc:
        fail(str(exc))
        return
    typer.echo(paper_table.markdown(result))
    typer.echo(f"written to {out / f'paper-table-{run_label}'}.{{json,md,png}}")


@app.command("frontier")
def bench_frontier(
    model: ModelOption = DEFAULT_MODEL,
    tasks: Annotated[str, typer.Option(help="one or two built-in multiple-choice tasks")] = "bbc_news",
    alphas: Annotated[str, typer.Option(help="alphas of the grid")] = "0.25,0.5,0.75",
    betas: Annotated[str, typer.Option(help="betas of the grid (ScaleOT; uniform runs at beta 0)")] = "0,0.25,0.5,0.75",
    quick: Annotated[bool, typer.Option(help="small budget: 64 train / 120 test examples, fixed lr")] = False,
    n_train: NTrainOption = None,
    n_test: NTestOption = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated tuning seeds (default 0)")] = None,
    lr_grid: Annotated[str | None, typer.Option(help="adapter-tuning learning rates to choose from")] = None,
    out: OutOption = RESULTS,
    label: Annotated[str | None, typer.Option(help="file name label (default: model [+ -tasks unless bbc_news] [+ "
                                                   "-quick] [+ -adapterB+T])")] = None,
    adapter: AdapterOption = "2,2",
    restart: RestartOption = False,
) -> None:
    """Sweep (alpha, beta) from one profile: privacy-utility frontier and the recommended dial settings."""
    from benchmarks.offsite_tuning import frontier, options
    from benchmarks.offsite_tuning.run_state import StateMismatchError
    from benchmarks.reports import frontier_report
    from model_owner_server import base_models
    from model_owner_server.cli_support import fail, stage1_with_progress
    from model_owner_server.emulators.profile import Stage1Config

    try:
        names = options.parse_tasks(tasks)
        alpha_grid = options.parse_floats(alphas, "--alphas")
        beta_grid = options.parse_floats(betas, "--betas")
        budget = options.override_budget(frontier.QUICK if quick else frontier.STANDARD, n_train=n_train,
                                         n_test=n_test, seeds=seeds, lr_grid=lr_grid)
        split = options.parse_adapter(adapter)
    except ValueError as exc:
        fail(str(exc))
        return
    base = base_models.load_base_model(model)
    profile = stage1_with_progress(base, Stage1Config(adapter_bottom=split[0], adapter_top=split[1]))
    run_label = label or frontier.default_label(Path(model).name, names, quick, options.adapter_label(split))
    try:
        result = frontier.run(base, profile, names, alpha_grid, beta_grid, budget, out, run_label, restart=restart)
    except StateMismatchError as exc:
        fail(str(exc))
        return
    typer.echo(frontier_report.markdown(result))
    typer.echo(f"written to {out / f'frontier-{run_label}'}.{{json,md,png}}")


@app.command("api-cpu")
def bench_api_cpu(
    requests: Annotated[int, typer.Option(min=10, max=100_000, help="requests per endpoint per round")] = 2000,
    rounds: Annotated[int, typer.Option(min=1, max=50, help="rounds, alternating between the endpoints")] = 3,
    database_url: Annotated[str | None, typer.Option(
        help="a PostgreSQL server URL (a fresh database per run; default SQLite)")] = None,
    out: OutOption = RESULTS,
) -> None:
    """CPU time of one metadata request inside the API process (in-process ASGI, no network): the
    server's share of `bench http`, steady enough to compare two commits."""
    from benchmarks.output import write_result
    from benchmarks.service_load import api_cpu

    result = api_cpu.run(requests, rounds, database_url)
    stem = write_result(out, f"api-cpu-{result['database']}", result, api_cpu.markdown(result))
    typer.echo(api_cpu.markdown(result))
    typer.echo(f"written to {stem}.{{json,md}}")


@app.command("http")
def bench_http(
    model: Annotated[str, typer.Option(help="base model of the emulator (local server mode)")] = "tiny-llama",
    method: Annotated[str, typer.Option(help="emulator method (local server mode): uniform or scaleot")] = "uniform",
    url: Annotated[str | None, typer.Option(help="measure a running server instead of starting one")] = None,
    key: Annotated[str | None, typer.Option(help="data-owner key (with --url)")] = None,
    emulator_id: Annotated[str | None, typer.Option(help="a built emulator (with --url)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="the server's SCALEOT_DATA_DIR (with --url)")] = None,
    clients: Annotated[int, typer.Option(help="concurrent clients")] = 32,
    requests: Annotated[int, typer.Option(help="requests per client per endpoint")] = 60,
    repeats: Annotated[int, typer.Option(help="download repetitions (median)")] = 3,
    port: Annotated[int, typer.Option(help="port of the local server")] = 8765,
    api_processes: Annotated[int, typer.Option(min=1, help="uvicorn processes of the local server")] = 1,
    database_url: Annotated[str | None, typer.Option(
        help="the local server's database (a PostgreSQL URL; default SQLite in its data dir)")] = None,
    api_threads: Annotated[str | None, typer.Option(
        help="compare API settings side by side: thread counts, or THREADSxPROCESSES (e.g. 8,4,4x2): metadata "
             "latency only, one server each")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds of the --api-threads comparison")] = 3,
    out: OutOption = RESULTS,
) -> None:
    """Status/metadata latency (median, p99, requests/s) under concurrent clients, the load generator
    in its own process; download MB/s: the data owner's client vs curl, and vs disk."""
    import json

    import httpx

    from benchmarks.service_load import http_load

    if api_threads is not None:
        from benchmarks.service_load import http_threads
        from model_owner_server.cli_support import fail

        try:
            settings = http_threads.parse_settings(api_threads)
        except ValueError as exc:
            fail(str(exc))
            return
        compared = http_threads.run(model, method, settings, clients, requests, rounds, port, database_url)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"http-threads-{Path(model).name}-{compared['database']}"
        stem.with_suffix(".json").write_text(json.dumps(compared, indent=2))
        stem.with_suffix(".md").write_text(http_threads.markdown(compared))
        typer.echo(http_threads.markdown(compared))
        typer.echo(f"written to {stem}.{{json,md}}")
        return
    if url is None:
        result = http_load.local_run(model, method, clients, requests, repeats, port, api_processes, database_url)
    else:
        if not (key and emulator_id and data_dir):
            raise typer.BadParameter("--url needs --key, --emulator-id and --data-dir")
        headers = {"Authorization": f"Bearer {key}"}
        emulator = httpx.get(f"{url}/v1/emulators/{emulator_id}", headers=headers, timeout=30).json()
        local = data_dir / "artifacts" / "emulators" / emulator_id
        result = http_load.run(url, headers, emulator, local, clients, requests, repeats)
    out.mkdir(parents=True, exist_ok=True)
    label = f"{Path(result['base_model']).name}-{result['method']}"
    if url is None and (api_processes > 1 or database_url):
        label += f"-{result['database']}-{api_processes}proc"
    path = out / f"http-load-{label}.json"
    path.write_text(json.dumps(result, indent=2))
    typer.echo(http_load.markdown(result))
    typer.echo(f"\nwritten to {path}")


@app.command("flow")
def bench_flow(
    model: ModelOption = DEFAULT_MODEL,
    method: Annotated[str, typer.Option(help="emulator method: scaleot or uniform")] = "scaleot",
    task: Annotated[str, typer.Option(help="built-in multiple-choice task")] = "winowhy",
    n_train: Annotated[int, typer.Option(help="training examples")] = 160,
    n_test: Annotated[int, typer.Option(help="test examples")] = 100,
    epochs: Annotated[int, typer.Option(help="tuning epochs")] = 1,
    port: Annotated[int, typer.Option(help="port of the local server")] = 8766,
    out: OutOption = RESULTS,
) -> None:
    """The whole flow over HTTP on a real server: emulator, download, tune, upload, evaluate, generate."""
    import json
    import tempfile

    from benchmarks.service_load import http_flow
    from data_owner_client.tuning.config import TuningConfig

    tuning = TuningConfig(epochs=epochs, lr=1e-4, batch_size=8, max_len=192)
    with tempfile.TemporaryDirectory(prefix="scaleot-flow-") as tmp:
        result = http_flow.run_flow(model, method, task, n_train, n_test, tuning, Path(tmp), port,
                                    prompt="The capital of France is")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"http-flow-{Path(model).name}-{method}.json"
    path.write_text(json.dumps(result, indent=2))
    typer.echo(http_flow.markdown(result))
    typer.echo(f"\nwritten to {path}")


@app.command("stage1-ddp")
def bench_stage1_ddp(
    model: Annotated[str, typer.Option(help="base model")] = "tiny-llama",
    nproc: Annotated[int, typer.Option(help="processes of the DDP run")] = 2,
    stage1: Annotated[str, typer.Option("--stage1", help="stage-1 settings as a JSON object (the global batch_size "
                                                         "divisible by --nproc)")
                      ] = '{"steps": 40, "batch_size": 4, "seq_len": 64}',
    adapter_bottom: Annotated[int, typer.Option(help="first blocks kept as adapter")] = 2,
    adapter_top: Annotated[int, typer.Option(help="last blocks kept as adapter")] = 2,
    single_threads: Annotated[int | None, typer.Option(help="torch threads of the single run (default: torch's)")
                              ] = None,
    out: OutOption = RESULTS,
) -> None:
    """Stage 1 under torchrun (DDP, gloo) vs one process: importance ranking agreement and time per step."""
    from benchmarks.compute import stage1_ddp
    from model_owner_server.cli_support import USER_ERRORS, fail, one_line
    from model_owner_server.emulators.profile import stage1_config

    try:
        config = stage1_config(stage1, adapter_bottom, adapter_top)
    except USER_ERRORS as exc:
        fail(one_line(exc))
        return
    try:
        result = stage1_ddp.run(model, config, nproc, out, single_threads=single_threads)
    except ValueError as exc:
        fail(str(exc))
        return
    typer.echo(stage1_ddp.markdown(result))
    typer.echo(f"\nwritten to {out / f'stage1-ddp-{Path(model).name}'}.{{json,md}}")


@app.command("stage1-cost")
def bench_stage1_cost(
    shapes: Annotated[str, typer.Option(help="larger random-weight shapes after the real SmolLM2-135M "
                                             "(comma-separated; '' for none)")] = "smollm2-360m-shape",
    timed_steps: Annotated[int, typer.Option(min=1, help="timed stage-1 steps per model (after one warm-up)")] = 3,
    threads: ThreadsOption = None,
    dtypes: Annotated[str, typer.Option(help="dtypes of the frozen base, side by side (comma-separated: "
                                             "float32, bfloat16, float16 on a GPU)")] = "float32",
    out: OutOption = RESULTS,
) -> None:
    """Stage-1 step time, memory and emulator size per model size and dtype (the numbers of deploy/README.md)."""
    from benchmarks.compute import stage1_cost
    from model_owner_server.cli_support import fail
    from shared.precision import PrecisionError, check_device, dtype_name, parse_dtype

    names = [s.strip() for s in shapes.split(",") if s.strip()]
    unknown = [s for s in names if s not in stage1_cost.SHAPES]
    if unknown:
        fail(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(stage1_cost.SHAPES)}")
    try:
        chosen = [parse_dtype(d) for d in dtypes.split(",") if d.strip()]
        for dtype in chosen:
            check_device(dtype, "cpu")  # stage 1 runs on the CPU here
    except PrecisionError as exc:
        fail(str(exc))
        return
    if not chosen:
        fail("--dtypes needs at least one dtype")
    result = stage1_cost.run(out, names, timed_steps, threads, [dtype_name(d) for d in dict.fromkeys(chosen)])
    typer.echo(stage1_cost.markdown(result))
    typer.echo(f"written to {out / stage1_cost.output_stem(result['dtypes'])}.{{json,md}}")


@app.command("dtype-parity")
def bench_dtype_parity(
    model: ModelOption = DEFAULT_MODEL,
    task: Annotated[str, typer.Option(help="built-in multiple-choice task")] = "goal_step_wikihow_goal",
    dtypes: Annotated[str, typer.Option(help="comma-separated; the first is the reference")] = "float32,bfloat16",
    n_train: Annotated[int, typer.Option(min=1, help="training examples for the adapter")] = 64,
    n_test: Annotated[int | None, typer.Option(min=1, help="test examples (default: the whole split)")] = None,
    threads: ThreadsOption = None,
    out: OutOption = RESULTS,
) -> None:
    """Zero-shot and plug-in accuracy per dtype of the base model, emulator and generation (parity within 1 SE)."""
    from benchmarks.offsite_tuning import dtype_parity
    from model_owner_server.cli_support import fail
    from shared.precision import PrecisionError, check_device, dtype_name, parse_dtype

    try:
        chosen = list(dict.fromkeys(parse_dtype(d) for d in dtypes.split(",") if d.strip()))
        for dtype in chosen:
            check_device(dtype, "cpu")
    except PrecisionError as exc:
        fail(str(exc))
        return
    if len(chosen) < 2:
        fail("--dtypes needs a reference and at least one other dtype, e.g. float32,bfloat16")
    result = dtype_parity.run(model, task, [dtype_name(d) for d in chosen], out, n_train, n_test, threads=threads)
    typer.echo(dtype_parity.markdown(result))


@app.command("stage1-ablation")
def bench_stage1_ablation(
    model: ModelOption = DEFAULT_MODEL,
    ranks: Annotated[str, typer.Option(help="harmonizer ranks of the training-free rows (comma-separated)")] = "64",
    profile: Annotated[bool, typer.Option(help="also compare the default profile's learned vs initial ranking "
                                               "(runs stage 1 if it is not cached)")] = True,
    out: OutOption = RESULTS,
) -> None:
    """What each part of stage 1 buys: LayerDrop, regression harmonizers, block placement, RL vs its start."""
    from benchmarks.emulator_quality import stage1_ablation
    from model_owner_server.cli_support import fail

    try:
        parsed = [int(r) for r in ranks.split(",") if r.strip()]
    except ValueError:
        fail(f"--ranks must be comma-separated integers, not {ranks!r}")
        return
    if not parsed or min(parsed) < 1:
        fail("--ranks needs at least one rank >= 1")
    result = stage1_ablation.run(model, parsed, out, with_profile=profile)
    typer.echo(stage1_ablation.markdown(result))


@app.command("src-refit")
def bench_src_refit(
    model: ModelOption = DEFAULT_MODEL,
    alpha: Annotated[float, typer.Option(help="fraction of middle blocks replaced")] = 0.5,
    betas: Annotated[str, typer.Option(help="SRC rank fractions removed, > 0 (comma-separated)")] = "0.25,0.5",
    threads: ThreadsOption = None,
    out: OutOption = RESULTS,
) -> None:
    """Harmonizers re-fitted after SRC vs not: perplexity, harmonizer error and build time per beta."""
    import torch

    from benchmarks.emulator_quality import src_refit
    from benchmarks.offsite_tuning.options import parse_floats
    from model_owner_server.cli_support import fail

    try:
        parsed = list(parse_floats(betas, "--betas"))
    except ValueError as exc:
        fail(str(exc))
        return
    if not all(0 < b < 1 for b in parsed):
        fail("--betas needs at least one beta, each in (0, 1)")
    if threads is not None:
        torch.set_num_threads(threads)
    result = src_refit.run(model, alpha, parsed, out)
    typer.echo(src_refit.markdown(result))


@app.command("ot-kd")
def bench_ot_kd(
    model: ModelOption = DEFAULT_MODEL,
    alpha: Annotated[float, typer.Option(help="fraction of middle blocks dropped/replaced")] = 0.5,
    task: Annotated[str, typer.Option(help="built-in multiple-choice task for the gradient batches")] = "bbc_news",
    batches: Annotated[int, typer.Option(min=1, help="training batches for the gradient cosine")] = 4,
    threads: ThreadsOption = None,
    out: OutOption = RESULTS,
) -> None:
    """OT-KD (uniform + distillation) vs uniform vs ScaleOT: perplexity, KD error, adapter-gradient cosine."""
    import torch

    from benchmarks.offsite_tuning import ot_kd
    from benchmarks.offsite_tuning.options import parse_tasks
    from model_owner_server import base_models
    from model_owner_server.cli_support import fail, stage1_with_progress
    from model_owner_server.emulators.profile import Stage1Config

    try:
        parse_tasks(task)
    except ValueError as exc:
        fail(str(exc))
        return
    if not 0 < alpha < 1:
        fail("--alpha must be in (0, 1)")
    if threads is not None:
        torch.set_num_threads(threads)
    base = base_models.load_base_model(model)
    result = ot_kd.run(base, stage1_with_progress(base, Stage1Config()), alpha, task, batches, out)
    typer.echo(ot_kd.markdown(result))


@app.command("jac-ab")
def bench_jac_ab(
    model: ModelOption = DEFAULT_MODEL,
    weights: Annotated[str, typer.Option(help="stage-1 jac_weight values, the first the reference")] = "0,1",
    alpha: Annotated[float, typer.Option(help="fraction of middle blocks replaced")] = 0.5,
    task: Annotated[str, typer.Option(help="built-in multiple-choice task for the gradient batches")] = (
        "goal_step_wikihow_goal"),
    batches: Annotated[int, typer.Option(min=1, help="training batches for the gradient cosine")] = 4,
    threads: ThreadsOption = None,
    out: OutOption = RESULTS,
) -> None:
    """Stage 1 with and without the Jacobian-matching term: adapter-gradient cosine, perplexity, KD error."""
    import torch

    from benchmarks.emulator_quality import jac_ab
    from benchmarks.offsite_tuning.options import parse_floats
    from model_owner_server.cli_support import fail

    try:
        parsed = list(parse_floats(weights, "--weights"))
    except ValueError as exc:
        fail(str(exc))
        return
    if any(w < 0 for w in parsed):
        fail("--weights needs jac_weight values >= 0")
        return
    if threads is not None:
        torch.set_num_threads(threads)
    result = jac_ab.run(model, parsed, alpha, task, batches, out)
    typer.echo(jac_ab.markdown(result))
    typer.echo(f"written to {out / f'jac-ab-{Path(model).name}'}.{{json,md}}")


@app.command("agreement")
def bench_agreement(
    model: ModelOption = DEFAULT_MODEL,
    sources: Annotated[str | None, typer.Option(
        help="comma-separated paper-table / frontier-raw JSONs whose utility gaps are explained (default: the "
             "committed ones)")] = None,
    n_test: Annotated[int | None, typer.Option(help="test prompts per task (default: the whole split)")] = None,
    distilled: Annotated[bool, typer.Option(help="also the OT-KD rows (distilling their emulator takes over an "
                                                 "hour on 2 cores)")] = False,
    out: OutOption = RESULTS,
) -> None:
    """Emulator-full agreement on each measured (task, emulator) against its utility gap: rank correlations
    and the agreement threshold of the service's agreement check. Resumable."""
    from benchmarks.offsite_tuning import agreement_study
    from model_owner_server import base_models
    from model_owner_server.cli_support import fail, stage1_with_progress
    from model_owner_server.emulators.profile import stage1_config

    paths = [Path(s.strip()) for s in (sources.split(",") if sources else agreement_study.SOURCES) if s.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        fail(f"--sources: no such result file(s): {', '.join(missing) or '(none given)'}")
        return
    if n_test is not None and n_test < 1:
        fail(f"--n-test must be at least 1, got {n_test}")
        return
    base = base_models.load_base_model(model)
    profile = stage1_with_progress(base, stage1_config("", 2, 2))
    label = Path(model).name + ("" if n_test is None else f"-n{n_test}")
    study = agreement_study.run(base, profile, paths, out, label, n_test=n_test, distilled=distilled)
    typer.echo(agreement_study.markdown(study))


@app.command("compare-runs")
def bench_compare_runs(
    a: Annotated[Path, typer.Argument(help="a transfer-split JSON (A)")],
    b: Annotated[Path, typer.Argument(help="a transfer-split JSON of the same task and test items (B)")],
    label: Annotated[str, typer.Option(help="file name label: results/compare-LABEL.{json,md}")] = "runs",
    out: OutOption = RESULTS,
) -> None:
    """Row-by-row paired differences A - B between two transfer-split runs (e.g. calibrated vs not)."""
    from benchmarks.reports import compare_runs
    from model_owner_server.cli_support import fail, one_line

    try:
        result = compare_runs.run(a, b, out, label)
    except (OSError, ValueError, KeyError) as exc:
        fail(one_line(exc))
        return
    typer.echo(compare_runs.markdown(result))


@app.command("transfer-split")
def bench_transfer_split(
    model: ModelOption = DEFAULT_MODEL,
    task: Annotated[str, typer.Option(help="built-in multiple-choice task")] = "intent_recognition",
    variant: Annotated[str, typer.Option(help="emulator variant method:beta[:alpha] (methods scaleot, uniform, "
                                              "ot-kd)")] = "scaleot:0:0.5",
    seeds: Annotated[str, typer.Option(help="comma-separated tuning seeds")] = "0",
    lr: Annotated[float | None, typer.Option(help="adapter tuning rate (default: chosen on the validation split "
                                                  "from the paper table's grid)")] = None,
    n_train: Annotated[int | None, typer.Option(help="override training examples (default 320)")] = None,
    n_test: Annotated[int | None, typer.Option(help="override test examples (default: whole split)")] = None,
    adapter: Annotated[str, typer.Option(help="adapter split BOTTOM,TOP (the stage-1 profile is the one of that "
                                              "split)")] = "2,2",
    stage1: Annotated[str, typer.Option(help="stage-1 overrides, a JSON object (e.g. "
                                             "'{\"logit_kd_weight\": 1}')")] = "",
    corpus: Annotated[str, typer.Option(help="stage-1 text: calibration, or calibration+instructions (adds "
                                             "public BIG-bench prompts of tasks never evaluated)")] = "calibration",
    calibrate: Annotated[bool, typer.Option(help="refine the emulator's harmonizers on the task's unlabelled "
                                                 "training prompts before tuning (task calibration)")] = False,
    calibration: Annotated[str, typer.Option(help="task-calibration overrides, a JSON object of "
                                                  "CalibrationSettings fields (e.g. '{\"steps\": 200}')")] = "",
    out: OutOption = RESULTS,
) -> None:
    """Which half of an emulator-tuned adapter transfers to the full model, and whether the plug-in path
    reproduces a full-model-tuned adapter exactly."""
    from benchmarks.offsite_tuning import options, paper_table, transfer_split
    from model_owner_server import base_models
    from model_owner_server.cli_support import fail, one_line, stage1_with_progress
    from model_owner_server.emulators.profile import stage1_config
    from shared.instruction_corpus import check_corpus, stage1_texts
    from shared.tasks import load_mc_task

    try:
        options.parse_tasks(task)
        check_corpus(corpus, "--corpus")  # before any data is read
        variants = options.parse_variants(variant, 0.5, "--variant")
        if len(variants) != 1:
            raise ValueError(f"--variant takes one variant, got {variant!r}")
        if variants[0].calibrated:
            raise ValueError("--variant: calibrate with --calibrate (and --calibration for its settings)")
        budget = options.override_budget(paper_table.STANDARD, n_train=n_train, n_test=n_test, seeds=seeds)
        split = options.parse_adapter(adapter)
        config = stage1_config(stage1, split[0], split[1])
        if lr is not None and not 0 < lr < 1:
            raise ValueError(f"--lr must be in (0, 1), got {lr}")
        settings = options.parse_calibration(calibration, "--calibration") if calibrate else None
        if calibration and not calibrate:
            raise ValueError("--calibration needs --calibrate")
    except ValueError as exc:  # pydantic's ValidationError too: one line naming the field
        fail(one_line(exc))
        return
    base = base_models.load_base_model(model)
    profile = stage1_with_progress(base, config, texts=stage1_texts(corpus))
    v = variants[0]
    run_label = (f"{Path(model).name}-{task}-{v.method}-a{v.alpha:g}-b{v.beta:g}{options.adapter_label(split)}"
                 f"{options.stage1_label(stage1, corpus)}{options.calibration_label(calibration) if calibrate else ''}")
    result = transfer_split.run(base, profile, load_mc_task(task), task, v, budget, lr, out, run_label,
                                calibration=settings)
    typer.echo(transfer_split.markdown(result))
    typer.echo(f"written to {out / f'transfer-split-{run_label}'}.{{json,md}}")


@app.command("header-rss")
def bench_header_rss(
    connections: Annotated[int, typer.Option(help="concurrent connections, each sending one oversized head")] = 8,
    header_mb: Annotated[int, typer.Option(help="size of the one header each connection sends, MiB")] = 32,
    out: OutOption = RESULTS,
) -> None:
    """API memory under oversized request heads: `serve` (bounded heads) against stock uvicorn."""
    from benchmarks.output import write_result
    from benchmarks.service_load import header_rss

    result = header_rss.run(connections, header_mb)
    text = header_rss.markdown(result)
    write_result(out, "header-rss", result, text)
    typer.echo(text)


@app.command("ui-pages")
def bench_ui_pages(
    requests: Annotated[int, typer.Option(min=1, max=1000, help="requests per page and viewer")] = 30,
    jobs: Annotated[int, typer.Option(min=20, max=100_000, help="jobs to seed (of every kind and state)")] = 1000,
    adapters: Annotated[int, typer.Option(min=1, max=100_000, help="adapters to seed")] = 1000,
    note: Annotated[str, typer.Option(help="a line added to the result (e.g. what else ran on the host)")] = "",
    before: Annotated[Path | None, typer.Option(help="an earlier run's ui-pages.json, shown side by side")] = None,
    before_label: Annotated[str, typer.Option(help="what the earlier run was (e.g. a commit)")] = "",
    out: OutOption = RESULTS,
) -> None:
    """Server time of each dashboard page (/ui) with many jobs and adapters in the database (in-process ASGI,
    SQLite, tiny models, no worker): median and p95 per page, as the admin and as a data owner."""
    import json

    from benchmarks.output import write_result
    from benchmarks.service_load import ui_pages

    earlier = json.loads(before.read_text()) if before else None  # read first: --out may overwrite it
    result = ui_pages.run(requests, jobs, adapters, note)
    if earlier is not None:
        result["before"] = {"label": before_label, "rows": earlier["rows"], "counts": earlier["counts"]}
    text = ui_pages.markdown(result)
    stem = write_result(out, "ui-pages", result, text)
    typer.echo(text)
    typer.echo(f"written to {stem}.{{json,md}}")
