"""Stage-1 orchestration, once for the worker, the CLI and the benchmarks: hold the profile's lock,
return the cached profile if there is one, else run stage 1 (in this process, resuming a checkpoint, or
on several processes under torchrun) and return what it cached."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from model_owner_server import base_models
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators import stage1
from model_owner_server.emulators.profile import (
    ImportanceProfile,
    Stage1Config,
    checkpoint_dir,
    corpus_tag,
    find_profile,
    profile_id,
)
from model_owner_server.emulators.profile_lock import profile_lock
from model_owner_server.emulators.stage1 import ProgressFn, Stage1Cancelled, base_profile_id

log = logging.getLogger("scaleot.stage1")
Notice = Callable[[str], None]


def _pid(base: LoadedBase | str, config: Stage1Config, texts: list[str] | None) -> str:
    if isinstance(base, LoadedBase):
        return base_profile_id(base, config, texts)
    return profile_id(base_models.weights_sha256(base), config, corpus_tag(texts))  # a name loads as float32


def obtain_profile(
    base: LoadedBase | str,
    config: Stage1Config,
    *,
    nproc: int = 1,
    device: str = "cpu",
    workdir: Path | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_wait: Callable[[], None] | None = None,
    on_notice: Notice | None = None,
    on_start: Callable[[], None] | None = None,
    texts: list[str] | None = None,
) -> ImportanceProfile:
    """The importance profile of `base` (a loaded base, or a model name: loaded as float32 only if stage 1
    runs in this process) under `config`, on `texts` (None: the built-in calibration corpus).

    `nproc` > 1 or a cuda `device` runs stage 1 as a torchrun subprocess; `workdir` keeps its output
    (a temporary folder when None; kept after a failure, named in the error). A stop (`should_stop`)
    raises Stage1Cancelled with a checkpoint kept, which the next call resumes; a checkpoint that cannot
    be restored is discarded once and stage 1 starts over, instead of failing every retry."""
    notice = on_notice or (lambda message: None)
    pid = _pid(base, config, texts)
    waiting = on_wait or (lambda: notice(f"another process is training profile {pid}; waiting"))
    with profile_lock(pid, should_stop, waiting):
        cached = find_profile(pid)
        if cached is not None:
            notice(f"using cached stage-1 profile {pid}")
            return cached
        if on_start is not None:
            on_start()  # e.g. a progress bar opens: stage 1 runs
        if nproc == 1 and device == "cpu":  # in this process
            loaded = base if isinstance(base, LoadedBase) else base_models.load_base_model(base)
            return _in_process(loaded, config, pid, texts, on_progress, should_stop, notice)
        name, dtype = (base.name, base.dtype) if isinstance(base, LoadedBase) else (base, "float32")
        return _processes(name, dtype, config, pid, texts, nproc, device, workdir, on_progress, should_stop, notice)


def _in_process(base: LoadedBase, config: Stage1Config, pid: str, texts: list[str] | None,
                on_progress: ProgressFn | None,
                should_stop: Callable[[], bool] | None, notice: Notice) -> ImportanceProfile:
    partial = checkpoint_dir(pid)
    had_checkpoint = partial.exists()
    try:
        return stage1.run_stage1(base, config, texts, on_progress=on_progress, should_stop=should_stop)
    except (ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, Stage1Cancelled) or not had_checkpoint:
            raise
        log.warning("stage-1 checkpoint %s could not be resumed (%s); starting stage 1 over", partial, exc)
        shutil.rmtree(partial, ignore_errors=True)
        notice("stage 1: checkpoint unusable, starting over")
        return stage1.run_stage1(base, config, texts, on_progress=on_progress, should_stop=should_stop)


def _processes(name: str, dtype: str, config: Stage1Config, pid: str, texts: list[str] | None, nproc: int,
               device: str,
               workdir: Path | None, on_progress: ProgressFn | None, should_stop: Callable[[], bool] | None,
               notice: Notice) -> ImportanceProfile:
    from model_owner_server.emulators.stage1_launch import Stage1ProcessError, run_stage1_processes

    notice(f"stage 1 on {nproc} processes ({device}): starting")
    work = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="scaleot-stage1-"))
    keep_output = False
    try:
        run_stage1_processes(name, config, nproc, work, device=device, dtype=dtype, texts=texts,
                             on_progress=on_progress, should_stop=should_stop)
    except Stage1ProcessError as exc:
        keep_output = True
        raise Stage1ProcessError(f"{exc} (full output: {work / 'output.log'})") from None
    finally:
        if not keep_output:
            shutil.rmtree(work, ignore_errors=True)
    profile = find_profile(pid)
    if profile is None:
        raise RuntimeError(f"stage 1 finished but profile {pid} is not in the cache")
    return profile
