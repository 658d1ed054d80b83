"""Emulator artifacts on disk: write atomically, verify every hash, load into a runnable model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from shared.atomic import atomic_directory
from shared.emulator_model import build_skeleton, materialize
from shared.manifest import MANIFEST_NAME, WEIGHTS_NAME, EmulatorManifest, FileEntry


class ArtifactError(ValueError):
    """An emulator directory is incomplete, tampered with, or not an emulator."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(directory: Path) -> dict[str, FileEntry]:
    """Name -> (sha256, size) of every file directly in `directory`, in name order."""
    return {p.name: FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
            for p in sorted(Path(directory).iterdir()) if p.is_file()}


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliases (tied embeddings are stored once; the loader re-ties them)."""
    seen: set[int] = set()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        ptr = tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size()
        if ptr in seen and tensor.numel() > 0:
            continue
        seen.add(ptr)
        state[name] = tensor.detach().contiguous()
    return state


def write_emulator(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    manifest: EmulatorManifest,
    out_dir: Path,
) -> EmulatorManifest:
    """Write config, weights, tokenizer and manifest to a temporary directory, then rename it."""
    with atomic_directory(Path(out_dir)) as tmp:
        model.config.save_pretrained(tmp)
        save_file(unique_state(model), tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        manifest = manifest.model_copy(update={"files": file_entries(tmp)})
        (tmp / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    return manifest


def read_manifest(directory: Path) -> EmulatorManifest:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an emulator: {MANIFEST_NAME} is missing")
    try:
        return EmulatorManifest.model_validate_json(path.read_text())
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not a valid emulator manifest: {exc}") from exc


def verify_emulator(directory: Path, known_sha256: Mapping[str, str] | None = None) -> EmulatorManifest:
    """Check that every file listed in the manifest is present with its size and sha256.

    `known_sha256` names files whose digest the caller has just computed while writing them (the
    download hashes as it receives); those are compared, not read from disk a second time.
    """
    known = known_sha256 or {}
    directory = Path(directory)
    manifest = read_manifest(directory)
    problems: list[str] = []
    for required in (WEIGHTS_NAME, "config.json"):
        if required not in manifest.files:
            problems.append(f"manifest lists no {required}")
    for name, entry in manifest.files.items():
        path = directory / name
        if Path(name).name != name:
            problems.append(f"{name}: file names must not contain a path")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{name}: size {path.stat().st_size} != {entry.size} in the manifest (truncated?)")
        elif (known[name] if name in known else sha256_file(path)) != entry.sha256:
            problems.append(f"{name}: sha256 mismatch (modified or corrupted)")
    if problems:
        raise ArtifactError(
            f"emulator {directory} failed verification: " + "; ".join(problems) + ". Download it again."
        )
    return manifest


def load_emulator(
    directory: Path, verify: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, EmulatorManifest]:
    """Verify hashes, then rebuild the emulator as a runnable transformers causal LM."""
    directory = Path(directory)
    manifest = verify_emulator(directory) if verify else read_manifest(directory)
    config = AutoConfig.from_pretrained(directory)
    try:
        state = load_file(directory / WEIGHTS_NAME)
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{directory / WEIGHTS_NAME} is not a readable safetensors file: {exc}") from exc
    try:
        model = build_skeleton(config, manifest.layers, manifest.harmonizer)
        materialize(model, state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{directory}: weights do not match the layer map: {exc}") from exc
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return model, tokenizer, manifest
