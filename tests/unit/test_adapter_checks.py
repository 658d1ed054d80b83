"""Issue 26 item 2: `adapter_checks.validate` is the one check of an adapter directory. It reads each
safetensors header once, and it applies the emulator-id metadata and LoRA-layer checks that
evaluation and generation (which used to call a narrower check) skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from model_owner_server import adapter_checks
from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.spec import EmulatorSpec
from shared import adapter_format
from shared.adapter_format import ADAPTER_FILE, PEFT_CONFIG, PEFT_WEIGHTS, AdapterError
from shared.manifest import EmulatorManifest
from tests.service.adapters import make_lora

SPEC = {"method": "uniform", "alpha": 0.5, "adapter_bottom": 1, "adapter_top": 1}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedBase, EmulatorManifest, Path]:
    base = load_base_model("tiny-llama")
    emu = tmp_path_factory.mktemp("emu")
    return base, build_emulator(base, EmulatorSpec(base_model="tiny-llama", **SPEC), None, emu), emu


def _full(base: LoadedBase, manifest: EmulatorManifest, directory: Path, emulator_id: str | None = None) -> Path:
    state = {k: v.clone() for k, v in base.model.state_dict().items()
             if k in adapter_checks.expected_full_tensors(base, manifest)}
    directory.mkdir()
    save_file(state, directory / ADAPTER_FILE, metadata={"emulator_id": emulator_id or manifest.emulator_id})
    return directory


def _count_header_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = adapter_format.read_header

    def counting(path: Path) -> adapter_format.SafetensorsHeader:
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(adapter_format, "read_header", counting)
    monkeypatch.setattr(adapter_checks, "read_header", counting)
    return reads


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_each_header_is_parsed_once(llama: tuple[LoadedBase, EmulatorManifest, Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    base, manifest, emu = llama
    directory = _full(base, manifest, tmp_path / "a") if kind == "full" else make_lora(emu, tmp_path / "a")
    reads = _count_header_reads(monkeypatch)
    checked = adapter_checks.validate(directory, base, manifest)
    assert checked.kind == kind and checked.state
    assert reads == [ADAPTER_FILE if kind == "full" else PEFT_WEIGHTS]  # metadata, key set and load: one parse


def test_validate_refuses_an_adapter_tuned_on_another_emulator(llama: tuple[LoadedBase, EmulatorManifest, Path],
                                                               tmp_path: Path) -> None:
    """check_adapter (evaluation, generation) accepted it: its tensors fit, only its metadata differs."""
    base, manifest, _ = llama
    directory = _full(base, manifest, tmp_path / "a", emulator_id="emu-someone-else")
    with pytest.raises(AdapterError) as info:
        adapter_checks.validate(directory, base, manifest)
    assert info.value.problems == [f"{ADAPTER_FILE}: tuned on emulator emu-someone-else, not {manifest.emulator_id}; "
                                   "upload it with emulator_id=emu-someone-else or tune on this emulator"]


def test_validate_applies_the_lora_block_checks(llama: tuple[LoadedBase, EmulatorManifest, Path],
                                                tmp_path: Path) -> None:
    """A stored LoRA config whose layers_pattern names no block list passed check_adapter."""
    base, manifest, emu = llama
    directory = make_lora(emu, tmp_path / "lora")
    config = json.loads((directory / PEFT_CONFIG).read_text())
    (directory / PEFT_CONFIG).write_text(json.dumps({**config, "layers_pattern": "blocks"}))
    with pytest.raises(AdapterError) as info:
        adapter_checks.validate(directory, base, manifest)
    assert any("layers_pattern 'blocks' is not the block list" in p for p in info.value.problems), info.value.problems


def test_validate_writes_nothing_and_returns_the_canonical_config(llama: tuple[LoadedBase, EmulatorManifest, Path],
                                                                  tmp_path: Path) -> None:
    """Evaluation and generation validate the stored copy: it must stay as stored; the upload writes the
    canonical form itself."""
    base, manifest, emu = llama
    directory = make_lora(emu, tmp_path / "lora")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    checked = adapter_checks.validate(directory, base, manifest)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert checked.lora_config is not None and set(checked.lora_config) <= {
        "peft_type", "r", "lora_alpha", "target_modules", "layers_to_transform", "layers_pattern", "lora_dropout",
        "bias", "fan_in_fan_out", "use_rslora", "init_lora_weights", "inference_mode", "task_type",
        "base_model_name_or_path", "revision"}
    adapter_checks.write_canonical_config(checked)
    assert json.loads((directory / PEFT_CONFIG).read_text()) == checked.lora_config


def test_metadata_and_header_problems_are_listed_together(llama: tuple[LoadedBase, EmulatorManifest, Path],
                                                          tmp_path: Path) -> None:
    """The order uploads have always answered with: the metadata's problem first, then the tensors'."""
    base, manifest, _ = llama
    directory = _full(base, manifest, tmp_path / "a", emulator_id="emu-someone-else")
    state = load_file(directory / ADAPTER_FILE)
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, directory / ADAPTER_FILE, metadata={"emulator_id": "emu-someone-else"})
    with pytest.raises(AdapterError) as info:
        adapter_checks.validate(directory, base, manifest)
    first, second = info.value.problems
    assert "tuned on emulator emu-someone-else" in first and f"missing tensor {dropped}" in second
