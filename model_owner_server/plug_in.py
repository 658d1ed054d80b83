"""Plug an uploaded adapter into the full model (owner side), or into the emulator (for the privacy
row of the evaluation matrix). The adapter was checked first (`adapter_checks.validate`): a wrong
adapter is rejected with every problem listed, never loaded loosely."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase
from shared.adapter_format import PEFT_CONFIG, PEFT_WEIGHTS, remap_block_indices
from shared.blocks import find_block_stack
from shared.manifest import EmulatorManifest


def plug_in(base: LoadedBase, adapter: CheckedAdapter) -> PreTrainedModel:
    """A copy of the full model with the adapter blocks replaced (LoRA merged), original middle intact."""
    model = copy.deepcopy(base.model)
    if adapter.kind == "full":
        _, unexpected = model.load_state_dict(adapter.state, strict=False)
        assert not unexpected, unexpected  # validate() checked the key set
        return model.eval()
    peft = PeftModel.from_pretrained(model, str(adapter.directory))
    return peft.merge_and_unload().eval()


def emulator_with_adapter(emulator: PreTrainedModel, manifest: EmulatorManifest,
                          adapter: CheckedAdapter) -> PreTrainedModel:
    """The emulator with the tuned adapter (full -> emulator block indices): the privacy row."""
    model = copy.deepcopy(emulator)
    stack_path = find_block_stack(model).path
    to_emulator = {e.full_index: e.emulator_index for e in manifest.layers}
    if adapter.kind == "full":
        state = remap_block_indices(adapter.state, stack_path, to_emulator)
        _, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        return model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        config = dict(adapter.lora_config or {})
        layers = config.get("layers_to_transform")
        assert isinstance(layers, list)
        config["layers_to_transform"] = [to_emulator[i] for i in layers]
        (Path(tmp) / PEFT_CONFIG).write_text(json.dumps(config))
        save_file(remap_block_indices(load_file(adapter.directory / PEFT_WEIGHTS), stack_path, to_emulator),
                  Path(tmp) / PEFT_WEIGHTS)
        peft = PeftModel.from_pretrained(model, tmp)
        return peft.merge_and_unload().eval()


@torch.no_grad()
def changes_outputs(before: PreTrainedModel, after: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether plugging in changed the model's next-token distribution on a probe sentence."""
    ids = tokenizer("The adapter should change what the model predicts next.", return_tensors="pt")["input_ids"]
    return not torch.allclose(before(ids).logits, after(ids).logits, atol=1e-6)


