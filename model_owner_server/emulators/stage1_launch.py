"""Stage 1 on several processes: the torchrun entry point, and the launcher a worker or the CLI uses.

Entry point (one process per rank; gloo on CPU, nccl on CUDA):
    torchrun --nproc_per_node 2 -m model_owner_server.emulators.stage1_launch --model tiny-llama \\
        --config '{"steps": 40, "batch_size": 4}' [--progress-file F] [--stop-file F] [--device cpu|cuda]
Rank 0 appends one JSON line per event to the progress file ("step", "cached", "done", "cancelled";
"error" from any rank) and checks the stop file once per step; when it appears, rank 0 checkpoints
and every rank exits 0 after a "cancelled" event. The profile lands in the same cache, under the
same profile id, as a single-process run with the same config.

`run_stage1_processes` starts that command as a subprocess (`python -m torch.distributed.run`),
turns the progress file into `on_progress` calls, asks for a graceful stop (the stop file) when
`should_stop` says so or when the caller is interrupted, and raises `Stage1ProcessError` with the
ranks' error and the last lines of their output when the processes fail.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_owner_server.emulators.distributed import check_world
from model_owner_server.emulators.profile import Stage1Config
from model_owner_server.emulators.stage1 import ProgressFn, Stage1Cancelled, Stage1Progress, base_profile_id
from shared.precision import check_device, parse_dtype

MODULE = "model_owner_server.emulators.stage1_launch"
STDERR_TAIL_LINES = 15


class Stage1ProcessError(RuntimeError):
    """The stage-1 processes failed (the message carries their error and the end of their output)."""


# --- the torchrun side ---------------------------------------------------------------------------


class EventLog:
    """Appends JSON lines (one write per line, flushed) to the progress file; a no-op without a file."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = json.dumps({"event": event, "t": time.time(), **fields}) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"torchrun ... -m {MODULE}", description="stage 1 on every rank")
    parser.add_argument("--model", required=True, help="base model name or local HF directory")
    parser.add_argument("--config", default="{}", help="Stage1Config as JSON (fields not given: defaults)")
    parser.add_argument("--texts-file", default=None, help="JSON list of training texts (default: calibration)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="the frozen base's dtype (harmonizers train in float32 whatever it is)")
    parser.add_argument("--progress-file", default=None)
    parser.add_argument("--stop-file", default=None)
    parser.add_argument("--watch-pid", type=int, default=None, help="stop (with a checkpoint) if this pid dies")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per rank")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch
    import torch.distributed as dist

    from model_owner_server.base_models import load_base_model
    from model_owner_server.emulators.distributed import ProcessGroupCollective
    from model_owner_server.emulators.profile import find_profile
    from model_owner_server.emulators.stage1 import run_stage1

    if args.threads:
        torch.set_num_threads(args.threads)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    events = EventLog(args.progress_file)
    rank = dist.get_rank()
    try:
        comm = ProcessGroupCollective(args.device)
        config = Stage1Config.model_validate(json.loads(args.config))
        comm.check(config)
        texts = json.loads(Path(args.texts_file).read_text()) if args.texts_file else None
        dtype = parse_dtype(args.dtype)
        check_device(dtype, args.device)
        base = load_base_model(args.model, dtype)
        torch.nn.Module.to(base.model, comm.device)  # (transformers types `.to` narrowly)
        pid = base_profile_id(base, config, texts)
        if comm.agree(find_profile(pid) is not None):  # rank 0 decides, so no rank trains alone
            if comm.is_main:
                events.write("cached", profile_id=pid)
            return 0
        parent = os.getppid()

        def should_stop() -> bool:
            stop_file = args.stop_file is not None and os.path.exists(args.stop_file)
            orphaned = os.getppid() != parent or (args.watch_pid is not None and not _alive(args.watch_pid))
            return stop_file or orphaned

        def on_progress(p: Stage1Progress) -> None:
            events.write("step", step=p.step, total=p.total, loss=p.loss, reward=p.reward, phase=p.phase)

        main_rank = comm.is_main
        try:
            profile = run_stage1(base, config, texts=texts, comm=comm, on_progress=on_progress if main_rank else None,
                                 should_stop=should_stop if main_rank else None)
        except Stage1Cancelled as exc:
            if main_rank:
                events.write("cancelled", message=str(exc))
            return 0
        if main_rank:
            events.write("done", profile_id=profile.meta.profile_id, wall_seconds=profile.meta.wall_seconds)
        return 0
    except Exception as exc:
        events.write("error", rank=rank, error=f"{type(exc).__name__}: {exc}".replace("\n", " "))
        raise
    finally:
        dist.destroy_process_group()


# --- the launching side (worker, CLI) ------------------------------------------------------------


def _command(
    model: str, config: Stage1Config, nproc: int, workdir: Path, device: str, texts_file: Path | None,
    threads: int | None, dtype: str = "float32",
) -> list[str]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", MODULE,
        "--model", model,
        "--config", config.model_dump_json(),
        "--device", device,
        "--dtype", dtype,
        "--progress-file", str(workdir / "progress.jsonl"),
        "--stop-file", str(workdir / "stop"),
        "--watch-pid", str(os.getpid()),
    ]
    if texts_file is not None:
        cmd += ["--texts-file", str(texts_file)]
    if threads:
        cmd += ["--threads", str(threads)]
    return cmd


class _Tail:
    """Reads complete new lines of the progress file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def events(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


def _log_tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    kept = [line for line in text.splitlines() if line.strip() and not set(line.strip()) <= set("*=-")]
    return " | ".join(kept[-lines:])


def _stop(proc: subprocess.Popen[bytes], stop_file: Path, grace_s: float) -> None:
    """Ask for a graceful stop (rank 0 checkpoints), then SIGTERM torchrun (it stops its ranks), then SIGKILL."""
    stop_file.touch()
    for sig, wait_s in ((None, grace_s), (signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        if sig is not None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_stage1_processes(
    model: str,
    config: Stage1Config,
    nproc: int,
    workdir: Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    texts: list[str] | None = None,
    threads: int | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 0.2,
    stop_grace_s: float = 120.0,
) -> str:
    """Run stage 1 on `nproc` processes; returns the profile id (the profile is in the cache).

    Raises Stage1Cancelled after a stop (`should_stop`, or an exception such as KeyboardInterrupt or the
    job's JobCancelled raised by `on_progress`, which is re-raised), with a checkpoint kept to resume from.
    """
    check_world(config, nproc)
    check_device(parse_dtype(dtype), device)
    if device == "cuda" and nproc > 1:
        import torch

        if torch.cuda.device_count() < nproc:
            raise ValueError(f"{nproc} stage-1 processes on cuda need {nproc} GPUs; {torch.cuda.device_count()} "
                             "are visible")
    workdir.mkdir(parents=True, exist_ok=True)
    progress_file, stop_file, log_file = workdir / "progress.jsonl", workdir / "stop", workdir / "output.log"
    for stale in (progress_file, stop_file):
        stale.unlink(missing_ok=True)
    texts_file = None
    if texts is not None:
        texts_file = workdir / "texts.json"
        texts_file.write_text(json.dumps(texts))
    cmd = _command(model, config, nproc, workdir, device, texts_file, threads, dtype)
    tail = _Tail(progress_file)
    seen: dict[str, dict[str, Any]] = {}

    def drain() -> None:
        for event in tail.events():
            seen.setdefault(event["event"], event)
            if on_event is not None:
                on_event(event)
            if event["event"] == "step" and on_progress is not None:
                on_progress(Stage1Progress(event["step"], event["total"], event["loss"], event["reward"],
                                           event.get("phase", "training steps")))

    with open(log_file, "wb") as log:
        # a session of its own: a terminal's Ctrl-C reaches the caller only, which stops the ranks gracefully
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                drain()
                if should_stop is not None and should_stop():
                    _stop(proc, stop_file, stop_grace_s)
                    break
                time.sleep(poll_s)
            drain()
        except BaseException:
            _stop(proc, stop_file, stop_grace_s)
            raise
    if "cancelled" in seen or stop_file.exists():
        message = seen.get("cancelled", {}).get("message", f"stage 1 ({nproc} processes) stopped")
        raise Stage1Cancelled(message)
    if proc.returncode != 0 or not ({"done", "cached"} & seen.keys()):
        error = seen.get("error")
        cause = f"rank {error['rank']}: {error['error']}; " if error else ""
        raise Stage1ProcessError(f"stage 1 on {nproc} processes failed (exit code {proc.returncode}): {cause}"
                                 f"last output: {_log_tail(log_file)}")
    return str(seen.get("done", seen.get("cached", {}))["profile_id"])


if __name__ == "__main__":
    sys.exit(main())
