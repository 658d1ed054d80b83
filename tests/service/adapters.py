"""Adapters for the service tests, made directly in the artifact format (fast, independent of the
trainer): the original adapter blocks slightly perturbed (full), or a PEFT LoRA directory.
`test_server.py` also trains a real one with the data owner's `train_adapter`."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from model_owner_server.adapter_checks import expected_full_tensors
from model_owner_server.base_models import load_base_model
from shared.adapter_format import PEFT_WEIGHTS, save_adapter
from shared.artifacts import read_manifest


def make_adapter(emulator_dir: Path, out_dir: Path, scale: float = 0.05) -> Path:
    manifest = read_manifest(emulator_dir)
    base = load_base_model(manifest.base_model)
    original = base.model.state_dict()
    generator = torch.Generator().manual_seed(1)
    state = {k: original[k] + scale * torch.randn(original[k].shape, generator=generator)
             for k in expected_full_tensors(base, manifest)}
    return save_adapter(state, manifest, out_dir)


def make_lora(emulator_dir: Path, out_dir: Path) -> Path:
    manifest = read_manifest(emulator_dir)
    model = load_base_model(manifest.base_model).model
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        layers_to_transform=manifest.adapter_indices())
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(out_dir)
    state = load_file(out_dir / PEFT_WEIGHTS)
    save_file(state, out_dir / PEFT_WEIGHTS, metadata={"format": "pt", "emulator_id": manifest.emulator_id})
    return out_dir
