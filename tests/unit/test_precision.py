"""Half precision: the dtype setting, a bfloat16 base, float32 master copies of what is trained over it
(stage-1 harmonizers, adapter blocks), the artifact in the base's dtype, plug-in into a bfloat16 base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from data_owner_client.tuning.trainer import tune
from model_owner_server import adapter_checks
from model_owner_server.base_models import load_base_model
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.profile import Stage1Config, corpus_tag, profile_id
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import base_profile_id, run_stage1
from model_owner_server.plug_in import changes_outputs, plug_in
from model_owner_server.settings import Settings
from shared.adapter_format import ADAPTER_FILE
from shared.artifacts import load_emulator
from shared.blocks import find_block_stack
from shared.data_formats import TrainExample
from shared.precision import PrecisionError, check_device, fp32_master, model_dtype, parse_dtype
from tests.unit.helpers import TEXTS, tiny_config

TRAIN = [TrainExample(context=f"item {i} is", target=" red") for i in range(16)]
CONFIG = TuningConfig(epochs=1, lr=3e-3, batch_size=8, max_len=32, warmup_ratio=0.0)
DEV = {"environment": "development"}


def stored_dtypes(path: Path) -> set[str]:
    """The dtypes written in a safetensors file (F32, BF16, ...)."""
    with safe_open(str(path), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def test_dtype_setting_is_validated() -> None:
    assert Settings(**DEV).torch_dtype == torch.float32  # the default: behaviour unchanged
    assert Settings(**DEV, dtype="bfloat16").torch_dtype == torch.bfloat16
    with pytest.raises(ValidationError, match=r"float16 needs a GPU.*bfloat16"):
        Settings(**DEV, dtype="float16")
    with pytest.raises(ValidationError, match="dtype"):
        Settings(**DEV, dtype="float8")  # type: ignore[arg-type]
    assert parse_dtype("bf16") == torch.bfloat16
    with pytest.raises(PrecisionError, match="use one of float32, bfloat16, float16"):
        parse_dtype("half-ish")
    with pytest.raises(PrecisionError, match="on the CPU use bfloat16"):
        check_device(torch.float16, "cpu")


def test_bad_dtype_setting_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from model_owner_server.cli import app

    monkeypatch.setenv("SCALEOT_ENVIRONMENT", "development")
    monkeypatch.setenv("SCALEOT_DTYPE", "fp8")
    result = CliRunner().invoke(app, ["worker", "--once"])
    assert result.exit_code == 2 and "SCALEOT_DTYPE" in result.output and "Traceback" not in result.output


def test_bfloat16_base_loads_with_the_same_digest() -> None:
    full, half = load_base_model("tiny-llama"), load_base_model("tiny-llama", torch.bfloat16)
    assert model_dtype(half.model) == torch.bfloat16 and half.dtype == "bfloat16" and full.dtype == "float32"
    assert half.weights_sha256 == full.weights_sha256  # the stored weights; ids tell the dtypes apart
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    torch.testing.assert_close(half.model(ids).logits.float(), full.model(ids).logits, atol=0.1, rtol=0.1)


def test_a_profile_id_carries_the_loaded_bases_dtype() -> None:
    fp32, bf16 = load_base_model("tiny-llama"), load_base_model("tiny-llama", torch.bfloat16)
    config = Stage1Config()
    assert base_profile_id(fp32, config) == profile_id(fp32.weights_sha256, config)  # float32 ids unchanged
    assert base_profile_id(bf16, config) != base_profile_id(fp32, config)  # a bf16 base never finds fp32's profile
    assert base_profile_id(fp32, config, ["custom text"]) == profile_id(
        fp32.weights_sha256, config, corpus_tag(["custom text"]))


def test_fp32_master_is_a_float32_island_and_undoes_itself() -> None:
    base = load_base_model("tiny-llama", torch.bfloat16)
    block = find_block_stack(base.model).blocks[1]
    undo = fp32_master(block)
    assert all(p.dtype == torch.float32 for p in block.parameters())
    out = base.model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]]))
    out.loss.backward()  # through bfloat16 blocks into the float32 one
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in block.parameters())
    undo()
    assert all(p.dtype == torch.bfloat16 for p in block.parameters())


def test_stage1_over_a_bfloat16_base_trains_float32_harmonizers() -> None:
    base = load_base_model("tiny-llama", torch.bfloat16)
    profile = run_stage1(base, tiny_config(steps=2), texts=TEXTS)
    assert profile.harmonizers and all(t.dtype == torch.float32 for t in profile.harmonizers.values())
    assert all(torch.isfinite(torch.tensor(p.loss)) for p in profile.meta.curve)
    assert model_dtype(base.model) == torch.bfloat16  # the frozen base is left as it was
    fp32 = load_base_model("tiny-llama")
    assert profile.meta.profile_id != run_stage1(fp32, tiny_config(steps=0), texts=TEXTS).meta.profile_id


@pytest.fixture
def bf16_emulator(tmp_path: Path) -> tuple[Path, Path]:
    """A scaleot emulator (harmonizers from a profile, SRC) of a bfloat16 base, and its full-mode adapter."""
    base = load_base_model("tiny-llama", torch.bfloat16)
    profile = run_stage1(base, tiny_config(steps=1), texts=TEXTS)
    spec = EmulatorSpec(base_model="tiny-llama", alpha=0.5, beta=0.5, adapter_bottom=1, adapter_top=1)
    manifest = build_emulator(base, spec, profile, tmp_path / "emu")
    assert manifest.dtype == "bfloat16"
    assert manifest.emulator_id != spec.emulator_id(base.weights_sha256, profile.meta.profile_id)  # fp32's id
    train_adapter(tmp_path / "emu", TRAIN, None, CONFIG, tmp_path / "adapter")
    return tmp_path / "emu", tmp_path / "adapter"


def test_emulator_artifact_is_bfloat16_and_generates(bf16_emulator: tuple[Path, Path]) -> None:
    emu_dir, _ = bf16_emulator
    assert stored_dtypes(emu_dir / "emulator.safetensors") == {"BF16"}
    model, tokenizer, manifest = load_emulator(emu_dir)
    assert model_dtype(model) == torch.bfloat16 and manifest.dtype == "bfloat16"
    ids = tokenizer("abc", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
    assert out.shape[1] == ids.shape[1] + 4


def test_tuning_on_a_bfloat16_emulator_keeps_float32_masters(bf16_emulator: tuple[Path, Path]) -> None:
    emu_dir, adapter_dir = bf16_emulator
    assert stored_dtypes(adapter_dir / ADAPTER_FILE) == {"F32"}
    model, tokenizer, manifest = load_emulator(emu_dir)
    blocks = [e.emulator_index for e in manifest.layers if e.kind.value == "adapter"]
    before = {k: v.clone() for k, v in find_block_stack(model).blocks[blocks[0]].state_dict().items()}
    result = tune(model, tokenizer, blocks, TRAIN, None, CONFIG)
    assert result.state and all(v.dtype == torch.float32 for v in result.state.values())
    # updates smaller than bfloat16's resolution still reach the float32 masters
    changed = [k for k, v in result.state.items() if k.endswith(f".{blocks[0]}.mlp.down_proj.weight")]
    assert changed and not torch.equal(result.state[changed[0]].bfloat16().float(), result.state[changed[0]])
    assert model_dtype(result.model) == torch.bfloat16  # the model is in one dtype again
    assert any(not torch.equal(before[k], v) for k, v in find_block_stack(model).blocks[blocks[0]].state_dict().items())


def test_lora_on_a_bfloat16_emulator_keeps_float32_matrices(bf16_emulator: tuple[Path, Path], tmp_path: Path) -> None:
    emu_dir, _ = bf16_emulator
    train_adapter(emu_dir, TRAIN, None, CONFIG.model_copy(update={"mode": "lora"}), tmp_path / "lora")
    assert stored_dtypes(tmp_path / "lora" / "adapter_model.safetensors") == {"F32"}
    base = load_base_model("tiny-llama", torch.bfloat16)
    _, _, manifest = load_emulator(emu_dir)
    plugged = plug_in(base, adapter_checks.validate(tmp_path / "lora", base, manifest))
    assert model_dtype(plugged) == torch.bfloat16 and changes_outputs(base.model, plugged, base.tokenizer)


def test_plug_in_into_a_bfloat16_base(bf16_emulator: tuple[Path, Path]) -> None:
    emu_dir, adapter_dir = bf16_emulator
    base = load_base_model("tiny-llama", torch.bfloat16)
    _, _, manifest = load_emulator(emu_dir)
    adapter = adapter_checks.validate(adapter_dir, base, manifest)  # a float32 adapter fits a bfloat16 base
    plugged = plug_in(base, adapter)
    assert model_dtype(plugged) == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in plugged.parameters())
    assert changes_outputs(base.model, plugged, base.tokenizer)
    ids = base.tokenizer("abc", return_tensors="pt")["input_ids"]
    assert plugged.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


def test_dtype_parity_bench_on_a_tiny_model(tmp_path: Path) -> None:
    from benchmarks.offsite_tuning import dtype_parity

    tuning = TuningConfig(epochs=1, lr=1e-3, batch_size=4, max_len=64, warmup_ratio=0.0)
    result = dtype_parity.run("tiny-llama", "goal_step_wikihow_goal", ["float32", "bfloat16"], tmp_path,
                              n_train=8, n_test=8, tuning=tuning)
    assert [r["manifest_dtype"] for r in result["runs"]] == ["float32", "bfloat16"]
    compared = result["against"]["bfloat16"]
    assert set(compared) == {"zero_shot", "plug_in"} and all(c["paired_stderr"] >= 0 for c in compared.values())
    assert (tmp_path / "dtype-parity-tiny-llama-goal_step_wikihow_goal.md").read_text().count("| bfloat16 |") == 3
