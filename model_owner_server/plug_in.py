"""Plug an uploaded adapter into the full model (owner side), or into the emulator (for the privacy
row of the evaluation matrix). Every adapter is checked against the emulator's exact key set first;
a wrong adapter is rejected with every problem listed, never loaded loosely."""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model_owner_server.base_models import LoadedBase
from shared.adapter_format import (
    ADAPTER_FILE,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    AdapterError,
    TensorInfo,
    expected_adapter_tensors,
    load_checked,
    remap_block_indices,
)
from shared.blocks import find_block_stack
from shared.low_rank import is_projection, linear_weight
from shared.manifest import EmulatorManifest


@dataclass
class CheckedAdapter:
    kind: Literal["full", "lora"]
    directory: Path
    state: dict[str, torch.Tensor]  # full: base-model keys; lora: PEFT keys (full-model indices)
    lora_config: dict[str, object] | None = None


def expected_full_tensors(base: LoadedBase, manifest: EmulatorManifest) -> dict[str, TensorInfo]:
    stack = find_block_stack(base.model)
    return expected_adapter_tensors(base.model.state_dict(), stack.path, manifest.adapter_indices())


def expected_lora_tensors(base: LoadedBase, manifest: EmulatorManifest, config: dict[str, object]
                          ) -> tuple[dict[str, TensorInfo], list[str]]:
    """LoRA A/B tensors PEFT would create for this config on the adapter blocks, plus config problems."""
    problems: list[str] = []
    stack = find_block_stack(base.model)
    allowed = set(manifest.adapter_indices())
    layers = config.get("layers_to_transform")
    if config.get("peft_type") != "LORA":
        problems.append(f"{PEFT_CONFIG}: peft_type must be LORA")
    if not isinstance(layers, list) or not layers or not all(isinstance(i, int) for i in layers):
        problems.append(f"{PEFT_CONFIG}: layers_to_transform must list full-model adapter block indices "
                        f"{sorted(allowed)}")
        layers = []
    outside = sorted(set(layers) - allowed)
    if outside:
        problems.append(f"{PEFT_CONFIG}: layers_to_transform {outside} are not adapter blocks of this emulator "
                        f"(adapter blocks: {sorted(allowed)})")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        problems.append(f"{PEFT_CONFIG}: r must be a positive integer")
        rank = 1
    targets = config.get("target_modules")
    target_set = set(targets) if isinstance(targets, list) else set()
    if not target_set:
        problems.append(f"{PEFT_CONFIG}: target_modules must be a list of projection names")
    expected: dict[str, TensorInfo] = {}
    for i in sorted(set(layers) & allowed):
        for name, module in stack.blocks[i].named_modules():
            if name and is_projection(module) and name.rsplit(".", 1)[-1] in target_set:
                out_f, in_f = linear_weight(module)[0].shape
                prefix = f"base_model.model.{stack.path}.{i}.{name}"
                expected[f"{prefix}.lora_A.weight"] = TensorInfo("F32", (rank, in_f))
                expected[f"{prefix}.lora_B.weight"] = TensorInfo("F32", (out_f, rank))
    return expected, problems


def check_adapter(directory: Path, base: LoadedBase, manifest: EmulatorManifest) -> CheckedAdapter:
    """Validate an adapter directory (full-block safetensors or PEFT LoRA) against the emulator."""
    if (directory / ADAPTER_FILE).is_file():
        state = load_checked(directory / ADAPTER_FILE, expected_full_tensors(base, manifest))
        return CheckedAdapter("full", directory, state)
    if (directory / PEFT_CONFIG).is_file() and (directory / PEFT_WEIGHTS).is_file():
        try:
            config = json.loads((directory / PEFT_CONFIG).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdapterError([f"{PEFT_CONFIG}: not valid JSON ({exc})"]) from exc
        if not isinstance(config, dict):
            raise AdapterError([f"{PEFT_CONFIG}: must be a JSON object"])
        expected, problems = expected_lora_tensors(base, manifest, config)
        try:
            state = load_checked(directory / PEFT_WEIGHTS, expected)
        except AdapterError as exc:
            problems += exc.problems
            state = {}
        if problems:
            raise AdapterError(problems)
        return CheckedAdapter("lora", directory, state, config)
    # no directory in the message: it is a server path, and the reason reaches API answers and job errors
    raise AdapterError([f"no {ADAPTER_FILE} and no PEFT pair {PEFT_CONFIG} + {PEFT_WEIGHTS}"])


def plug_in(base: LoadedBase, adapter: CheckedAdapter) -> PreTrainedModel:
    """A copy of the full model with the adapter blocks replaced (LoRA merged), original middle intact."""
    model = copy.deepcopy(base.model)
    if adapter.kind == "full":
        _, unexpected = model.load_state_dict(adapter.state, strict=False)
        assert not unexpected, unexpected  # check_adapter guarantees the key set
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


