"""Adapter uploads: name the uploaded parts, validate them against the emulator, probe, publish atomically.

A full-block adapter is one `adapter.safetensors` (any single `*.safetensors` part is taken as it);
a LoRA adapter is the PEFT pair `adapter_config.json` + `adapter_model.safetensors` sent as two
`file` parts; the two kinds never together. Three steps:
1. on an API thread, briefly: the emulator (built, present), the form, the parts' names;
2. on a probe thread (`ProbePool`: a few at once, a bounded queue, 503 past it; a waiting upload holds
   no API thread): `adapter_checks.validate` (every problem at once), the canonical LoRA config
   written, then the probe (`probe.prove`: plugged into the full model, varied texts, finite);
3. on an API thread: publish the files and record the adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from anyio import to_thread
from sqlmodel import Session
from transformers import PreTrainedModel

from model_owner_server.adapter_checks import CheckedAdapter, validate, write_canonical_config
from model_owner_server.app.core.security import Principal
from model_owner_server.app.core.state import AppState
from model_owner_server.app.services import quotas
from model_owner_server.app.services.access import built_emulator
from model_owner_server.app.services.errors import Unprocessable
from model_owner_server.app.services.probe import prove
from model_owner_server.app.services.uploads import MultipartForm, UploadedFile
from model_owner_server.app.services.views import adapter_out
from model_owner_server.base_models import LoadedBase
from model_owner_server.db.models import Adapter
from model_owner_server.jobs.queue import new_id
from model_owner_server.storage.keys import adapter_prefix
from shared.adapter_format import ADAPTER_FILE, PEFT_CONFIG, PEFT_WEIGHTS, AdapterError
from shared.api import AdapterOut
from shared.artifacts import file_entries
from shared.manifest import EmulatorManifest

ACCEPTED = (ADAPTER_FILE, PEFT_CONFIG, PEFT_WEIGHTS)
IGNORED = ("training_log.json", "README.md")  # written by `scaleot train` beside the adapter; not needed


def place_files(files: list[UploadedFile], directory: Path) -> list[str]:
    """Move uploaded parts to their canonical names in `directory`; returns naming problems."""
    problems: list[str] = []
    named = [f for f in files if f.filename not in IGNORED]
    if not named:
        return [f"no adapter file uploaded: send {ADAPTER_FILE}, or {PEFT_CONFIG} + {PEFT_WEIGHTS}, "
                "as `file` parts"]
    for upload in named:
        if upload.field != "file":
            problems.append(f"part {upload.field!r} ({upload.filename}): files go in form field 'file'")
    single = len(named) == 1 and named[0].filename.endswith(".safetensors")
    seen: set[str] = set()
    for upload in named:
        name = ADAPTER_FILE if single and upload.filename != PEFT_WEIGHTS else upload.filename
        if name not in ACCEPTED:
            problems.append(f"unexpected file {upload.filename!r}: accepted names are {', '.join(ACCEPTED)}")
        elif name in seen:
            problems.append(f"{name} uploaded twice")
        else:
            seen.add(name)
            upload.path.replace(directory / name)
    if ADAPTER_FILE in seen and seen & {PEFT_CONFIG, PEFT_WEIGHTS}:
        stray = ", ".join(sorted(seen & {PEFT_CONFIG, PEFT_WEIGHTS}))
        problems.append(f"{ADAPTER_FILE} (a full adapter) was sent with LoRA files ({stray}): upload one kind")
    elif PEFT_WEIGHTS in seen and PEFT_CONFIG not in seen:
        problems.append(f"a LoRA adapter needs {PEFT_CONFIG} beside {PEFT_WEIGHTS}")
    if PEFT_CONFIG in seen and PEFT_WEIGHTS not in seen:
        problems.append(f"a LoRA adapter needs {PEFT_WEIGHTS} beside {PEFT_CONFIG}")
    return problems


def check_and_probe(base: LoadedBase, directory: Path, manifest: EmulatorManifest
                    ) -> tuple[CheckedAdapter, PreTrainedModel]:
    """Every check, then the probe: (the adapter, the full model with it plugged in). Raises AdapterError
    with every problem the checks found, or the probe's. Runs on a probe thread."""
    checked = validate(directory, base, manifest)
    write_canonical_config(checked)  # what PEFT loads in the probe and what is stored is what was checked
    return checked, prove(base, checked)


def rejected(problems: list[str]) -> Unprocessable:
    return Unprocessable({"message": f"adapter rejected: {len(problems)} problem(s)", "problems": problems})



@dataclass
class PlacedUpload:
    """An upload whose emulator and part names were accepted, waiting for its checks and probe."""
    emulator_id: str
    manifest: EmulatorManifest
    directory: Path


def place_upload(state: AppState, principal: Principal, form: MultipartForm, work: Path) -> PlacedUpload:
    """Step 1 (API thread, no model): the emulator the upload names, and its parts at their names."""
    emulator_id = form.fields.get("emulator_id", "").strip()
    if not emulator_id:
        raise rejected(["form field 'emulator_id' is missing: name the emulator the adapter was tuned on"])
    with Session(state.engine, expire_on_commit=False) as session:
        emulator = built_emulator(session, principal, emulator_id, "upload adapters tuned on it", state.store)
        assert emulator.manifest_json is not None  # built_emulator checked it
        manifest = EmulatorManifest.model_validate_json(emulator.manifest_json)
        # before the probe (the costly part): the parts' sizes are what will be stored. The owner's lock is let go
        # at once, not held through the probe (seconds); publish_upload checks again
        quotas.check_storage(session, state.settings, principal,
                             sum(f.size for f in form.files if f.filename not in IGNORED))
        session.rollback()
    directory = work / "adapter"
    directory.mkdir()
    problems = place_files(form.files, directory)
    if problems:
        raise rejected(problems)
    return PlacedUpload(emulator_id, manifest, directory)


def probe_upload(state: AppState, upload: PlacedUpload) -> tuple[CheckedAdapter, PreTrainedModel]:
    """Step 2 (probe thread): the checks and the probe; 422 with every problem."""
    try:
        return check_and_probe(state.base_models.get(upload.manifest.base_model), upload.directory, upload.manifest)
    except AdapterError as exc:
        raise rejected(exc.problems) from exc


def publish_upload(state: AppState, principal: Principal, upload: PlacedUpload, checked: CheckedAdapter,
                   plugged: PreTrainedModel) -> AdapterOut:
    """Step 3 (API thread): publish the files and record the adapter; the probe's plugged model (which
    shares the base model's tensors, see plug_in) goes into the cache, so generation starts warm."""
    entries = file_entries(upload.directory)
    row = Adapter(id=new_id("ada"), owner_id=principal.owner_id, emulator_id=upload.emulator_id, kind=checked.kind,
                  files_json=json.dumps({k: v.model_dump() for k, v in entries.items()}),
                  size=sum(e.size for e in entries.values()))
    with Session(state.engine, expire_on_commit=False) as session:
        # checked again (the owner's row locked until the commit): uploads probed at the same time all passed
        # the check before their probes, and would together pass the quota by many uploads' sizes
        quotas.check_storage(session, state.settings, principal, row.size)
        session.add(row)
        session.flush()
        state.store.put_dir(adapter_prefix(row.id), upload.directory)
        session.commit()
    state.plugged.get_or_build(row.id, lambda: plugged)  # proven by the probe
    return adapter_out(row)


async def store_adapter(state: AppState, principal: Principal, form: MultipartForm, work: Path) -> AdapterOut:
    """Check an uploaded adapter against its emulator (every problem at once), probe it, then publish its
    files and record it. ProbesBusy when every probe slot and queue place is taken."""
    upload = await to_thread.run_sync(place_upload, state, principal, form, work)
    checked, plugged = await state.probes().run(probe_upload, state, upload)
    return await to_thread.run_sync(publish_upload, state, principal, upload, checked, plugged)
