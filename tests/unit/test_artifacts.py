from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model_owner_server.emulators.build import build_emulator, generate_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.tiny_models import TINY_MODELS
from shared.artifacts import ArtifactError, load_emulator, verify_emulator
from shared.harmonizer import Harmonizer
from shared.manifest import MANIFEST_NAME, WEIGHTS_NAME, LayerKind
from tests.unit.helpers import tiny_profile


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("method", ["scaleot", "uniform"])
def test_round_trip_gives_the_same_model(tmp_path: Path, name: str, method: str) -> None:
    base, profile = tiny_profile(name)
    spec = EmulatorSpec(base_model=name, method=method, alpha=0.5, beta=0.5, adapter_bottom=1, adapter_top=1)  # type: ignore[arg-type]
    emulator, _ = generate_emulator(base, spec, profile)
    manifest = build_emulator(base, spec, profile, tmp_path / "emu")
    assert {WEIGHTS_NAME, "config.json", "tokenizer.json"} <= set(manifest.files)
    loaded, tokenizer, loaded_manifest = load_emulator(tmp_path / "emu")
    assert loaded_manifest == manifest
    ids = tokenizer("pack my box", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(loaded(ids).logits, emulator(ids).logits, rtol=0, atol=0)
    out = loaded.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4
    if method == "scaleot":
        kinds = {e.kind for e in manifest.layers}
        assert kinds == {LayerKind.adapter, LayerKind.kept_src, LayerKind.harmonizer}
        assert any(isinstance(m, Harmonizer) for m in loaded.modules())
        assert manifest.profile_id == profile.meta.profile_id
    # tied embeddings are stored once and re-tied on load
    if loaded.config.tie_word_embeddings:
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


def test_same_request_gives_the_same_emulator_id(tmp_path: Path) -> None:
    base, profile = tiny_profile()
    spec = EmulatorSpec(base_model="tiny-llama", alpha=0.5, adapter_bottom=1, adapter_top=1)
    a = build_emulator(base, spec, profile, tmp_path / "a")
    b = build_emulator(base, spec, profile, tmp_path / "b")
    assert a.emulator_id == b.emulator_id
    assert a.files[WEIGHTS_NAME].sha256 == b.files[WEIGHTS_NAME].sha256


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    base, profile = tiny_profile()
    spec = EmulatorSpec(base_model="tiny-llama", alpha=0.5, beta=0.25, adapter_bottom=1, adapter_top=1)
    build_emulator(base, spec, profile, tmp_path / "emu")
    return tmp_path / "emu"


def test_tampered_weights_are_rejected(artifact: Path) -> None:
    data = bytearray((artifact / WEIGHTS_NAME).read_bytes())
    data[-3] ^= 0xFF
    (artifact / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"emulator.safetensors: sha256 mismatch.*Download it again"):
        load_emulator(artifact)


def test_truncated_and_missing_files_are_all_listed(artifact: Path) -> None:
    weights = artifact / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    (artifact / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError) as info:
        verify_emulator(artifact)
    assert "truncated" in str(info.value) and "tokenizer.json: missing" in str(info.value)


def test_not_an_emulator_and_bad_manifest(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"manifest\.json is missing"):
        load_emulator(tmp_path)
    (artifact / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid emulator manifest"):
        load_emulator(artifact)


def test_manifest_path_traversal_is_rejected(artifact: Path) -> None:
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    manifest["files"]["../escape"] = {"sha256": "0" * 64, "size": 1}
    (artifact / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="must not contain a path"):
        verify_emulator(artifact)


def test_weights_that_do_not_match_the_layer_map_are_rejected(artifact: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    base, _ = tiny_profile()
    build_emulator(
        base,
        EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.5, adapter_bottom=1, adapter_top=1),
        None,
        other,
    )
    shutil.copy(other / WEIGHTS_NAME, artifact / WEIGHTS_NAME)
    with pytest.raises(ArtifactError):
        load_emulator(artifact, verify=False)


def test_write_is_atomic_and_replaces_an_old_artifact(artifact: Path) -> None:
    base, _ = tiny_profile()
    spec = EmulatorSpec(base_model="tiny-llama", method="uniform", alpha=0.25, adapter_bottom=1, adapter_top=1)
    build_emulator(base, spec, None, artifact)
    assert load_emulator(artifact)[2].method == "uniform"
    assert not [p for p in artifact.parent.iterdir() if p.name.startswith(".")]
