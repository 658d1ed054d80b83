"""Adapter uploads: name the uploaded parts, validate them against the emulator, publish atomically.

A full-block adapter is one `adapter.safetensors` (any single `*.safetensors` part is taken as it);
a LoRA adapter is the PEFT pair `adapter_config.json` + `adapter_model.safetensors` sent as two
`file` parts. Validation is `plug_in.check_adapter` (header first: key set, shapes, dtypes; then
finiteness) plus the emulator id recorded in the file's metadata; every problem is reported at once.
"""

from __future__ import annotations

from pathlib import Path

from model_owner_server.app.api.multipart import UploadedFile
from model_owner_server.base_models import BaseModel
from model_owner_server.plug_in import CheckedAdapter, check_adapter
from shared.adapter_format import ADAPTER_FILE, PEFT_CONFIG, PEFT_WEIGHTS, AdapterError, read_header
from shared.artifacts import sha256_file
from shared.manifest import EmulatorManifest, FileEntry

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
    if PEFT_WEIGHTS in seen and PEFT_CONFIG not in seen:
        problems.append(f"a LoRA adapter needs {PEFT_CONFIG} beside {PEFT_WEIGHTS}")
    if PEFT_CONFIG in seen and PEFT_WEIGHTS not in seen:
        problems.append(f"a LoRA adapter needs {PEFT_WEIGHTS} beside {PEFT_CONFIG}")
    return problems


def metadata_problems(directory: Path, manifest: EmulatorManifest) -> list[str]:
    """An adapter whose metadata names another emulator was tuned on something else."""
    for name in (ADAPTER_FILE, PEFT_WEIGHTS):
        path = directory / name
        if not path.is_file():
            continue
        try:
            recorded = read_header(path).metadata.get("emulator_id")
        except AdapterError:
            return []  # check_adapter reports the unreadable header
        if recorded and recorded != manifest.emulator_id:
            return [f"{name}: tuned on emulator {recorded}, not {manifest.emulator_id}; upload it with "
                    f"emulator_id={recorded} or tune on this emulator"]
    return []


def validate(directory: Path, base: BaseModel, manifest: EmulatorManifest) -> CheckedAdapter:
    """check_adapter plus the metadata check; raises AdapterError with every problem."""
    problems = metadata_problems(directory, manifest)
    try:
        checked = check_adapter(directory, base, manifest)
    except AdapterError as exc:
        raise AdapterError(problems + exc.problems) from exc
    if problems:
        raise AdapterError(problems)
    return checked


def file_entries(directory: Path) -> dict[str, FileEntry]:
    return {p.name: FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
            for p in sorted(directory.iterdir()) if p.is_file()}

