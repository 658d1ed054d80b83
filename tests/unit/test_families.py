"""Every path on the families that normalise queries and keys inside attention (`q_norm`/`k_norm`):
Gemma 3 (with its sliding-window / full-attention pattern) and Qwen3. Stage 1, scaleot / uniform /
ablations, SRC, load_emulator + generate with the KV cache, full and LoRA tuning, plug-in, scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from model_owner_server import adapter_checks
from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.emulators.build import build_emulator, generate_emulator
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.evaluation.run import evaluate_adapter
from model_owner_server.plug_in import changes_outputs, emulator_with_adapter, plug_in
from model_owner_server.tiny_models import TINY_SLIDING_WINDOW
from shared.artifacts import load_emulator
from shared.data_formats import MCExample, TrainExample
from shared.harmonizer import Harmonizer
from shared.manifest import EmulatorOptions, LayerKind
from tests.unit.helpers import tiny_profile

QK_NORM_FAMILIES = ["tiny-gemma3", "tiny-qwen3"]
TEST = [MCExample(context=f"Item {i}: the colour is", choices=["red", "green", "blue"], label=i % 3)
        for i in range(6)]
TRAIN = [TrainExample(context=e.context, target=" " + e.choices[e.label]) for e in TEST]
CONFIG = TuningConfig(epochs=1, lr=1e-2, batch_size=4, max_len=32, warmup_ratio=0.0)
VARIANTS: dict[str, dict[str, object]] = {
    "scaleot+src": {"method": "scaleot", "beta": 0.5},
    "uniform": {"method": "uniform", "beta": 0.5},
    "no-harmonizers": {"method": "scaleot", "options": EmulatorOptions(harmonizers=False)},
    "no-importance": {"method": "scaleot", "options": EmulatorOptions(importance=False)},
    "no-src": {"method": "scaleot", "beta": 0.5, "options": EmulatorOptions(src=False)},
}
EXPECTED_KINDS = {
    "scaleot+src": {LayerKind.adapter, LayerKind.kept_src, LayerKind.harmonizer},
    "uniform": {LayerKind.adapter, LayerKind.kept_src},
    "no-harmonizers": {LayerKind.adapter, LayerKind.kept},
    "no-importance": {LayerKind.adapter, LayerKind.kept, LayerKind.harmonizer},
    "no-src": {LayerKind.adapter, LayerKind.kept, LayerKind.harmonizer},
}


@pytest.fixture(scope="module", params=QK_NORM_FAMILIES)
def stage1(request: pytest.FixtureRequest) -> tuple[LoadedBase, ImportanceProfile]:
    return tiny_profile(str(request.param))


def _spec(base: LoadedBase, variant: str) -> EmulatorSpec:
    return EmulatorSpec.model_validate({"base_model": base.name, "alpha": 0.5, "adapter_bottom": 1,
                                        "adapter_top": 1, **VARIANTS[variant]})


def test_stage1_trains_hidden_width_harmonizers(stage1: tuple[LoadedBase, ImportanceProfile]) -> None:
    _, profile = stage1
    for full_index in profile.meta.middle:
        state = profile.harmonizer_state(full_index)
        assert state["norm.weight"].shape == (64,)  # the block's input norm, not q_norm (head width 16)
        assert state["up.weight"].abs().sum() > 0  # trained away from the identity


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_emulator_builds_loads_and_generates_with_the_cache(stage1: tuple[LoadedBase, ImportanceProfile],
                                                            variant: str, tmp_path: Path) -> None:
    base, profile = stage1
    spec = _spec(base, variant)
    emulator, _ = generate_emulator(base, spec, profile)
    manifest = build_emulator(base, spec, profile, tmp_path / "emu")
    assert {e.kind for e in manifest.layers} == EXPECTED_KINDS[variant]
    loaded, tokenizer, _ = load_emulator(tmp_path / "emu")
    assert any(isinstance(m, Harmonizer) for m in loaded.modules()) == (LayerKind.harmonizer in EXPECTED_KINDS[variant])
    # the emulator keeps each kept block's attention kind (sliding or full) from the base model
    types = base.model.config.layer_types
    assert loaded.config.layer_types == [types[e.full_index] for e in manifest.layers]
    ids = tokenizer("pack my box with five dozen", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(loaded(ids).logits, emulator(ids).logits, rtol=0, atol=0)
    # past the sliding window, with and without the KV cache: the same greedy text
    new = 2 * TINY_SLIDING_WINDOW
    cached = loaded.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True)
    uncached = loaded.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=False)
    assert cached.shape[1] == ids.shape[1] + new
    assert torch.equal(cached, uncached)


def test_full_and_lora_tuning_plug_in_and_scoring(stage1: tuple[LoadedBase, ImportanceProfile],
                                                  tmp_path: Path) -> None:
    base, profile = stage1
    manifest = build_emulator(base, _spec(base, "scaleot+src"), profile, tmp_path / "emu")
    train_adapter(tmp_path / "emu", TRAIN, None, CONFIG, tmp_path / "full")
    train_adapter(tmp_path / "emu", TRAIN, None, CONFIG.model_copy(update={"mode": "lora"}), tmp_path / "lora")

    full_adapter = adapter_checks.validate(tmp_path / "full", base, manifest)
    plugged = plug_in(base, full_adapter)
    assert changes_outputs(base.model, plugged, base.tokenizer)
    emulator, _, _ = load_emulator(tmp_path / "emu")
    tuned = emulator_with_adapter(emulator, manifest, full_adapter)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert not torch.allclose(tuned(ids).logits, load_emulator(tmp_path / "emu")[0](ids).logits)

    lora = adapter_checks.validate(tmp_path / "lora", base, manifest)
    assert lora.kind == "lora"
    reference = PeftModel.from_pretrained(load_base_model(base.name).model, str(tmp_path / "lora"))
    torch.testing.assert_close(plug_in(base, lora)(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)

    emulator, _, _ = load_emulator(tmp_path / "emu")
    matrix = evaluate_adapter(base, emulator, manifest, full_adapter, "toy", TEST)
    assert set(matrix.rows) == {"full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in"}
    assert all(score.n == len(TEST) and 0 <= score.value <= 1 for score in matrix.rows.values())
