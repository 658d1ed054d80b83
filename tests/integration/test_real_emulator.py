"""Integration: the real SmolLM2-135M and the real calibration/KJV data (marker `real`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.profile import Stage1Config
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import run_stage1
from shared.artifacts import load_emulator
from shared.assets import AssetError
from shared.corpora import calibration_split, kjv_text
from shared.manifest import LayerKind
from shared.perplexity import fixed_windows, perplexity

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def windows(smollm2: LoadedBase) -> dict[str, torch.Tensor]:
    try:
        held_out = calibration_split()[1]
        kjv = kjv_text()
    except AssetError as exc:
        pytest.skip(f"calibration data unavailable: {exc}")
    return {
        "calib": fixed_windows(smollm2.tokenizer, held_out, 128, 6),
        "kjv": fixed_windows(smollm2.tokenizer, [kjv], 128, 6),
    }


def test_real_model_structure_and_full_perplexity(smollm2: LoadedBase, windows: dict[str, torch.Tensor]) -> None:
    assert smollm2.num_layers == 30
    assert sum(p.numel() for p in smollm2.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    for name, w in windows.items():
        assert 8 < perplexity(smollm2.model, w) < 60, name


def test_stage1_and_emulators_on_the_real_model(
    smollm2: LoadedBase, windows: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    config = Stage1Config(steps=3, batch_size=2, seq_len=64, checkpoint_every=10, fit_sequences=16, fit_steps=30)
    profile = run_stage1(smollm2, config)
    assert profile.meta.middle == list(range(2, 28)) and len(profile.meta.importance) == 26
    init = profile.meta.init
    assert init is not None and len(init.influence) == 26
    assert all(0 < e < 0.5 for e in init.fit_error)  # fitted harmonizers imitate their blocks on held-out text
    full_ppl = perplexity(smollm2.model, windows["calib"])
    for method in ("scaleot", "uniform"):
        spec = EmulatorSpec(base_model="smollm2-135m", method=method, alpha=0.5, beta=0.5)  # type: ignore[arg-type]
        manifest = build_emulator(smollm2, spec, profile, tmp_path / method)
        emulator, tokenizer, _ = load_emulator(tmp_path / method)
        kinds = [e.kind for e in manifest.layers]
        assert kinds.count(LayerKind.adapter) == 4
        assert kinds.count(LayerKind.kept_src) == 13
        assert kinds.count(LayerKind.harmonizer) == (13 if method == "scaleot" else 0)
        ppl = perplexity(emulator, windows["calib"])
        assert ppl > 2 * full_ppl  # the emulator is clearly worse than the full model
        ids = tokenizer("The capital of France is", return_tensors="pt")
        out = emulator.generate(**ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        assert out.shape[1] == ids["input_ids"].shape[1] + 5
    assert (tmp_path / "scaleot" / "emulator.safetensors").stat().st_size < 0.8 * 538e6
