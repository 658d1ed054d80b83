"""Job: build one emulator (stage 1 first when its importance profile is not cached, then stage 2)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from sqlmodel import Session

from model_owner_server.base_models import LoadedBase
from model_owner_server.db.models import Emulator
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.profile import (
    ImportanceProfile,
    Stage1Config,
    checkpoint_dir,
    find_profile,
)
from model_owner_server.emulators.profile_lock import profile_lock
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import (
    ProgressFn,
    Stage1Cancelled,
    Stage1Progress,
    base_profile_id,
    ensure_profile,
)
from model_owner_server.jobs.worker import JobContext, WorkerServices
from model_owner_server.settings import Settings
from model_owner_server.storage.keys import emulator_prefix

log = logging.getLogger("scaleot.worker")
STAGE1_SHARE = 0.9  # of the progress bar, when stage 1 runs


def profile_resuming(base: LoadedBase, config: Stage1Config, on_step: ProgressFn, ctx: JobContext
                     ) -> ImportanceProfile:
    """ensure_profile, resuming a stage-1 checkpoint left by a stopped or crashed attempt; a checkpoint
    that cannot be restored (stale format, or the restore bug reported with this service) is
    discarded once and stage 1 starts over, instead of failing the job on every retry."""
    partial = checkpoint_dir(base_profile_id(base, config))
    had_checkpoint = partial.exists()
    try:
        return ensure_profile(base, config, on_progress=on_step, should_stop=ctx.should_stop)
    except (ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, Stage1Cancelled) or not had_checkpoint:
            raise
        log.warning("stage-1 checkpoint %s could not be resumed (%s); starting stage 1 over", partial, exc)
        shutil.rmtree(partial, ignore_errors=True)
        ctx.progress(0.01, "stage 1: checkpoint unusable, starting over", force=True)
        return ensure_profile(base, config, on_progress=on_step, should_stop=ctx.should_stop)


def profile_multiprocess(base: LoadedBase, config: Stage1Config, on_step: ProgressFn, ctx: JobContext,
                         settings: Settings) -> ImportanceProfile:
    """Stage 1 on `stage1_nproc` processes (torchrun subprocess, DDP): progress from its progress file, a
    cancellation or shutdown stops it gracefully (rank 0 checkpoints; the next attempt resumes)."""
    from model_owner_server.emulators.stage1_launch import Stage1ProcessError, run_stage1_processes

    pid = base_profile_id(base, config)
    cached = find_profile(pid)
    if cached is not None:
        return cached
    workdir = settings.data_dir / "tmp" / f"stage1-{ctx.job.id}"
    ctx.progress(0.01, f"stage 1 on {settings.stage1_nproc} processes ({settings.stage1_device}): starting",
                 force=True)
    keep_output = False
    try:
        run_stage1_processes(base.name, config, settings.stage1_nproc, workdir, device=settings.stage1_device,
                             dtype=base.dtype,
                             on_progress=on_step, should_stop=ctx.should_stop)
    except Stage1ProcessError as exc:
        keep_output = True
        raise Stage1ProcessError(f"{exc} (full output: {workdir / 'output.log'})") from None
    finally:
        if not keep_output:
            shutil.rmtree(workdir, ignore_errors=True)
    profile = find_profile(pid)
    if profile is None:
        raise RuntimeError(f"stage 1 finished but profile {pid} is not in the cache")
    return profile




def run_emulator_build(ctx: JobContext, services: WorkerServices) -> str:
    with Session(services.engine) as session:
        row = session.get(Emulator, ctx.job.subject_id)
        if row is None:
            raise LookupError(f"emulator {ctx.job.subject_id} no longer exists")
        spec = EmulatorSpec.model_validate_json(row.spec_json)
        stage1 = Stage1Config.model_validate_json(row.stage1_json) if row.stage1_json else None
    ctx.progress(0.0, f"loading base model {spec.base_model}", force=True)
    base = services.base_models.get(spec.base_model)
    profile = None
    if stage1 is not None:
        ctx.progress(0.01, "stage 1 (Dynamic LayerReplace): looking for a cached importance profile", force=True)

        def on_step(p: Stage1Progress) -> None:
            ctx.progress(STAGE1_SHARE * p.step / p.total,
                         f"stage 1 step {p.step}/{p.total}: loss {p.loss:.3f}, reward {p.reward:.3f}")

        def waiting() -> None:
            ctx.progress(0.01, "stage 1: another worker is training this importance profile; waiting for it",
                         force=True)

        settings = services.settings
        with profile_lock(base_profile_id(base, stage1), ctx.should_stop, waiting):
            if settings.stage1_nproc > 1 or settings.stage1_device != "cpu":
                profile = profile_multiprocess(base, stage1, on_step, ctx, settings)
            else:
                profile = profile_resuming(base, stage1, on_step, ctx)
    ctx.progress(STAGE1_SHARE if stage1 else 0.1, "stage 2: generating the emulator", force=True)
    tmp_root = services.settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{row.id}.", dir=tmp_root))
    try:
        start = STAGE1_SHARE if stage1 else 0.1

        def on_build(fraction: float, message: str) -> None:  # the long steps: SRC re-fit, OT-KD distillation
            ctx.progress(start + (0.97 - start) * fraction, f"stage 2: {message}")  # raises once cancelled

        manifest = build_emulator(base, spec, profile, tmp / "emulator", on_progress=on_build)
        if manifest.emulator_id != row.id:
            raise RuntimeError(f"built emulator id {manifest.emulator_id} != requested {row.id} (settings changed?)")
        ctx.progress(0.98, "publishing the emulator files", force=True)
        services.store.put_dir(emulator_prefix(row.id), tmp / "emulator")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with Session(services.engine) as session:
        stored = session.get(Emulator, row.id)
        assert stored is not None
        stored.manifest_json = manifest.model_dump_json()
        session.add(stored)
        session.commit()
    size = sum(f.size for f in manifest.files.values())
    return f"emulator ready: {len(manifest.layers)} blocks, {size / 1e6:.1f} MB"
