"""The data owner's job: tune the adapter on a downloaded emulator and save it by full-model index."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from peft import PeftModel
from safetensors.torch import load_file, save_file

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.trainer import TuningProgress, TuningResult, tune
from shared.adapter_format import (
    ADAPTER_FORMAT,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    remap_block_indices,
    save_adapter,
)
from shared.artifacts import load_emulator
from shared.blocks import find_block_stack
from shared.data_formats import TrainExample
from shared.manifest import EmulatorManifest, LayerKind

TRAINING_LOG = "training_log.json"


def train_adapter(
    emulator_dir: Path,
    train: list[TrainExample],
    valid: list[TrainExample] | None,
    config: TuningConfig,
    out_dir: Path,
    on_progress: Callable[[TuningProgress], None] | None = None,
) -> TuningResult:
    """Verify and load the emulator, tune its adapter blocks, write the adapter to `out_dir`."""
    model, tokenizer, manifest = load_emulator(emulator_dir)
    blocks = [e.emulator_index for e in manifest.layers if e.kind == LayerKind.adapter]
    result = tune(model, tokenizer, blocks, train, valid, config, on_progress)
    stack_path = find_block_stack(model).path
    if config.mode == "full":
        state = remap_block_indices(result.state, stack_path, manifest.emulator_to_full())
        save_adapter(state, manifest, out_dir)
    else:
        assert isinstance(result.model, PeftModel)
        save_lora(result.model, manifest, stack_path, out_dir, config.lora_base_path)
    log = {"emulator_id": manifest.emulator_id, "config": config.model_dump(), "best_epoch": result.best_epoch,
           "steps": result.steps, "tokens_per_second": result.tokens_per_second,
           "epochs": [asdict(e) for e in result.epochs]}
    (out_dir / TRAINING_LOG).write_text(json.dumps(log, indent=2))
    return result


def peft_base_path(base_model: str) -> str:
    """`base_model_name_or_path` for a LoRA adapter tuned on an emulator of `base_model`: a local path
    that PEFT and transformers resolve without the model hub.

    A base model the owner serves from a local directory is named by its absolute path on the owner's
    machine already. A registered name (`smollm2-135m`) becomes `./smollm2-135m`: relative to the folder
    where the model owner keeps prepared base models (`$SCALEOT_CACHE_DIR/models`, where
    `scaleot-server models prepare` writes them), so `AutoPeftModelForCausalLM.from_pretrained(adapter)`
    run from there loads the full model plugged with the adapter. A bare name would be looked up on the
    hub (`./` is never a hub id)."""
    return base_model if Path(base_model).is_absolute() else f"./{base_model}"


def save_lora(model: PeftModel, manifest: EmulatorManifest, stack_path: str, out_dir: Path,
              base_path: str | None = None) -> None:
    """A standard PEFT directory whose block indices are the FULL model's, so that
    `PeftModel.from_pretrained(full_model, out_dir)` puts LoRA on the right blocks, naming the full model
    as `base_path` (default `peft_base_path(manifest.base_model)`); the registry name stays in the weights'
    metadata."""
    mapping = manifest.emulator_to_full()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        model.save_pretrained(tmp)
        config = json.loads((Path(tmp) / PEFT_CONFIG).read_text())
        config["layers_to_transform"] = sorted(mapping[i] for i in config["layers_to_transform"])
        config["base_model_name_or_path"] = base_path or peft_base_path(manifest.base_model)
        state = remap_block_indices(load_file(Path(tmp) / PEFT_WEIGHTS), stack_path, mapping)
        metadata = {"format": "pt", "scaleot_format": ADAPTER_FORMAT + "+lora",
                    "emulator_id": manifest.emulator_id, "base_model": manifest.base_model,
                    "base_model_sha256": manifest.base_model_sha256}
        save_file(state, Path(tmp) / PEFT_WEIGHTS, metadata=metadata)
        (Path(tmp) / PEFT_CONFIG).write_text(json.dumps(config, indent=2))
        for name in (PEFT_CONFIG, PEFT_WEIGHTS):
            shutil.move(str(Path(tmp) / name), out_dir / name)
