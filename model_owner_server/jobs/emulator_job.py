"""Job: build one emulator (stage 1 first when its importance profile is not cached, then stage 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from model_owner_server.base_models import LoadedBase
from model_owner_server.db.models import Emulator
from model_owner_server.emulators.build import build_emulator, generate_emulator
from model_owner_server.emulators.obtain import obtain_profile
from model_owner_server.emulators.plan_key import plan_sha256
from model_owner_server.emulators.profile import ImportanceProfile, Stage1Config
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import INITIALISATION, Stage1Progress
from model_owner_server.emulators.task_calibration import (
    CalibrationCancelled,
    calibrate_harmonizers,
    prompt_set_sha256,
)
from model_owner_server.jobs.worker import JobCancelled, JobContext, WorkerServices
from model_owner_server.storage.keys import PROMPTS_FILE, emulator_prefix, prompt_set_prefix
from model_owner_server.storage.scratch import scratch_dir, scratch_root
from shared.artifacts import write_emulator
from shared.data_formats import load_prompt_jsonl
from shared.manifest import EmulatorManifest

STAGE1_SHARE = 0.9  # of the progress bar, when stage 1 runs


def _calibrated_build(ctx: JobContext, services: WorkerServices, base: LoadedBase, spec: EmulatorSpec,
                      profile: ImportanceProfile | None, out: Path, start: float,
                      on_build: Callable[[float, str], None]) -> EmulatorManifest:
    """Stage 2, then the harmonizers refined on the data owner's prompt set (task calibration), then written."""
    assert spec.calibration_prompts is not None
    emulator, manifest = generate_emulator(base, spec, profile, on_progress=lambda f, m: on_build(0.2 * f, m))
    prompts = load_prompt_jsonl(services.store.local_dir(prompt_set_prefix(spec.calibration_prompts))
                                / PROMPTS_FILE)
    if prompt_set_sha256(prompts) != spec.calibration_sha256:
        raise RuntimeError(f"prompt set {spec.calibration_prompts} changed since the emulator was requested")

    def on_calibration(fraction: float, message: str) -> None:
        ctx.progress(start + (0.97 - start) * (0.2 + 0.8 * fraction), f"calibration: {message}")  # raises on cancel

    try:
        record = calibrate_harmonizers(base.model, emulator, manifest.layers, base.tokenizer, prompts,
                                       on_progress=on_calibration, should_stop=ctx.should_stop)
    except CalibrationCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    return write_emulator(emulator, base.tokenizer, manifest.model_copy(update={"calibration": record}), out)


def _read_emulator(services: WorkerServices, emulator_id: str) -> Emulator | None:
    with Session(services.engine, expire_on_commit=False) as session:
        return session.get(Emulator, emulator_id)


def _record_manifest(services: WorkerServices, emulator_id: str, manifest: EmulatorManifest) -> None:
    with Session(services.engine) as session:
        stored = session.get(Emulator, emulator_id)
        assert stored is not None
        stored.manifest_json = manifest.model_dump_json()
        session.add(stored)
        session.commit()


def _record_plan(services: WorkerServices, emulator_id: str, plan: str) -> None:
    """The plan hash of an emulator the request could not plan (its stage-1 profile was not cached then), so
    later equivalent requests are answered by it. Best effort: an equivalent emulator may hold the plan already."""
    with Session(services.engine) as session:
        stored = session.get(Emulator, emulator_id)
        taken = session.exec(select(Emulator.id).where(col(Emulator.plan_sha256) == plan)).first()
        if stored is None or stored.plan_sha256 is not None or taken is not None:
            return
        stored.plan_sha256 = plan
        session.add(stored)
        try:
            session.commit()
        except IntegrityError:  # taken meanwhile (unique): that emulator answers the equivalent requests
            session.rollback()


def run_emulator_build(ctx: JobContext, services: WorkerServices) -> str:
    row = ctx.db(lambda: _read_emulator(services, ctx.job.subject_id), "reading the emulator")
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
            if p.phase == INITIALISATION:
                ctx.progress(0.01, "stage 1 initialisation: caching activations and fitting the harmonizers "
                                   "(minutes before the first step)", force=True)
                return
            ctx.progress(STAGE1_SHARE * p.step / p.total,
                         f"stage 1 training step {p.step}/{p.total}: loss {p.loss:.3f}, reward {p.reward:.3f}")

        def waiting() -> None:
            ctx.progress(0.01, "stage 1: another worker is training this importance profile; waiting for it",
                         force=True)

        settings = services.settings
        profile = obtain_profile(base, stage1, nproc=settings.stage1_nproc, device=settings.stage1_device,
                                 workdir=settings.data_dir / "tmp" / f"stage1-{ctx.job.id}", on_progress=on_step,
                                 should_stop=ctx.should_stop, on_wait=waiting,
                                 on_notice=lambda message: ctx.progress(0.01, message, force=True))
    ctx.progress(STAGE1_SHARE if stage1 else 0.1, "stage 2: generating the emulator", force=True)
    # locked while in use, so a folder a killed worker left is cleared at the next start-up (storage.scratch)
    with scratch_dir(scratch_root(services.settings.data_dir), f"{row.id}.") as tmp:
        start = STAGE1_SHARE if stage1 else 0.1

        def on_build(fraction: float, message: str) -> None:  # the long steps: SRC re-fit, OT-KD distillation
            ctx.progress(start + (0.97 - start) * fraction, f"stage 2: {message}")  # raises once cancelled

        if spec.calibrates:
            manifest = _calibrated_build(ctx, services, base, spec, profile, tmp / "emulator", start, on_build)
        else:
            manifest = build_emulator(base, spec, profile, tmp / "emulator", on_progress=on_build)
        if manifest.emulator_id != row.id:
            raise RuntimeError(f"built emulator id {manifest.emulator_id} != requested {row.id} (settings changed?)")
        ctx.progress(0.98, "writing: publishing the emulator files", force=True)
        services.store.put_dir(emulator_prefix(row.id), tmp / "emulator")
    ctx.db(lambda: _record_manifest(services, row.id, manifest), "recording the manifest")
    if row.plan_sha256 is None:
        plan = plan_sha256(spec, base.weights_sha256, base.dtype, manifest.profile_id, manifest.layers,
                           manifest.harmonizer)
        ctx.db(lambda: _record_plan(services, row.id, plan), "recording the layer plan")
    size = sum(f.size for f in manifest.files.values())
    return f"emulator ready: {len(manifest.layers)} blocks, {size / 1e6:.1f} MB"
