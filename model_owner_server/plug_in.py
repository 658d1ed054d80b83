"""Plug an uploaded adapter into the full model (owner side), or into the emulator (for the privacy
row of the evaluation matrix). The adapter was checked first (`adapter_checks.validate`): a wrong
adapter is rejected with every problem listed, never loaded loosely.

A plugged model is no copy of the full model: only the adapter's own blocks are copied (and then
overwritten or merged); every other parameter and buffer shares its storage with the loaded base, so
a probe, a cached plugged model or an evaluation costs the adapter's blocks, not the model. Nothing
writes a shared tensor: the writes (`load_state_dict`, PEFT's merge) are checked to stay in the
adapter's blocks before they happen.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase
from shared.adapter_format import PEFT_CONFIG, PEFT_WEIGHTS, remap_block_indices
from shared.blocks import find_block_stack
from shared.manifest import EmulatorManifest


def _block_indices(names: Iterable[str], stack_path: str) -> set[int]:
    """The blocks of the stack that `names` lie in; ValueError for a name outside every block (it would
    write a tensor the plugged model shares with the base)."""
    pattern = re.compile(rf"(?:^|\.){re.escape(stack_path)}\.(\d+)\.")
    found: set[int] = set()
    for name in names:
        match = pattern.search(name)
        if match is None:
            raise ValueError(f"{name} lies in no block of {stack_path}: the adapter may only change its blocks")
        found.add(int(match.group(1)))
    return found


def copy_sharing(model: PreTrainedModel, own_blocks: set[int]) -> PreTrainedModel:
    """A copy of `model` in which blocks `own_blocks` are private and every other parameter and buffer shares
    its storage with `model`. Shared parameters get new Parameter objects (PEFT sets `requires_grad` on the
    copy's, which must not reach the base); their values are never written."""
    stack_path = find_block_stack(model).path
    private = tuple(f"{stack_path}.{i}." for i in sorted(own_blocks))
    memo: dict[int, Any] = {}  # deepcopy takes what is in its memo as already copied: these stay shared
    for name, param in model.named_parameters():
        if not name.startswith(private):
            memo[id(param)] = torch.nn.Parameter(param.detach(), requires_grad=param.requires_grad)
    for name, buffer in model.named_buffers():
        if not name.startswith(private):
            memo[id(buffer)] = buffer
    return copy.deepcopy(model, memo)


def _load_blocks(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """`model` (its own copy of the blocks in `state`) with those tensors loaded."""
    _, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected  # validate() checked the key set
    return model.eval()


def _merge_lora(model: PreTrainedModel, directory: str, own_blocks: set[int]) -> PreTrainedModel:
    """PEFT loads the LoRA pair into `model` and merges it; refused before the merge if PEFT wrapped a
    module outside `own_blocks` (the merge would write a tensor shared with the base)."""
    peft = PeftModel.from_pretrained(model, directory)
    wrapped = [name for name, module in peft.named_modules() if isinstance(module, LoraLayer)]
    outside = _block_indices(wrapped, find_block_stack(model).path) - own_blocks
    if outside:
        raise ValueError(f"the LoRA config wraps blocks {sorted(outside)}, outside its layers_to_transform")
    return peft.merge_and_unload().eval()


def plug_in(base: LoadedBase, adapter: CheckedAdapter) -> PreTrainedModel:
    """The full model with the adapter blocks replaced (LoRA merged), original middle intact; it shares
    every tensor outside the adapter's blocks with `base.model`."""
    stack_path = find_block_stack(base.model).path
    if adapter.kind == "full":
        own = _block_indices(adapter.state, stack_path)
        return _load_blocks(copy_sharing(base.model, own), adapter.state)
    own = _lora_layers(adapter)
    return _merge_lora(copy_sharing(base.model, own), str(adapter.directory), own)


def _lora_layers(adapter: CheckedAdapter) -> set[int]:
    layers = (adapter.lora_config or {}).get("layers_to_transform")
    assert isinstance(layers, list)  # validate() checked the config
    return {int(i) for i in layers}


def emulator_with_adapter(emulator: PreTrainedModel, manifest: EmulatorManifest,
                          adapter: CheckedAdapter) -> PreTrainedModel:
    """The emulator with the tuned adapter (full -> emulator block indices): the privacy row."""
    stack_path = find_block_stack(emulator).path
    to_emulator = {e.full_index: e.emulator_index for e in manifest.layers}
    if adapter.kind == "full":
        state = remap_block_indices(adapter.state, stack_path, to_emulator)
        return _load_blocks(copy_sharing(emulator, _block_indices(state, stack_path)), state)
    own = {to_emulator[i] for i in _lora_layers(adapter)}
    with tempfile.TemporaryDirectory() as tmp:
        config = dict(adapter.lora_config or {})
        config["layers_to_transform"] = [to_emulator[i] for i in sorted(_lora_layers(adapter))]
        (Path(tmp) / PEFT_CONFIG).write_text(json.dumps(config))
        save_file(remap_block_indices(load_file(adapter.directory / PEFT_WEIGHTS), stack_path, to_emulator),
                  Path(tmp) / PEFT_WEIGHTS)
        return _merge_lora(copy_sharing(emulator, own), tmp, own)


@torch.no_grad()
def changes_outputs(before: PreTrainedModel, after: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether plugging in changed the model's next-token distribution on a probe sentence."""
    ids = tokenizer("The adapter should change what the model predicts next.", return_tensors="pt")["input_ids"]
    return not torch.allclose(before(ids).logits, after(ids).logits, atol=1e-6)


