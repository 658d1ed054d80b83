"""Synthetic adapters for the serving tests: full-block ones (the base's adapter blocks, perturbed) and
PEFT LoRA ones (random A/B, saved as a data owner would upload them), with the plugged copy of today's
path as the reference."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase
from model_owner_server.plug_in import plug_in
from shared.adapter_format import PEFT_CONFIG, PEFT_WEIGHTS, block_tensors
from shared.blocks import find_block_stack

LORA_TARGETS = {"tiny-gpt2": ["c_attn", "c_fc"], "tiny-opt": ["q_proj", "v_proj", "fc1"]}


def full_adapter(base: LoadedBase, blocks: list[int], seed: int, tmp: Path) -> CheckedAdapter:
    generator = torch.Generator().manual_seed(seed)
    stack = find_block_stack(base.model)
    state = {k: (v + 0.2 * torch.randn(v.shape, generator=generator) * v.float().std().clamp(min=0.05)).to(v.dtype)
             for k, v in block_tensors(base.model.state_dict(), stack.path, blocks).items()}
    return CheckedAdapter("full", tmp, state)


def lora_adapter(base: LoadedBase, blocks: list[int], seed: int, tmp: Path) -> CheckedAdapter:
    torch.manual_seed(seed)
    targets = LORA_TARGETS.get(base.name, ["q_proj", "v_proj", "up_proj"])
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, layers_to_transform=blocks,
                        init_lora_weights=False, fan_in_fan_out=base.name == "tiny-gpt2")
    import copy
    peft = get_peft_model(copy.deepcopy(base.model), config)
    tmp.mkdir(parents=True, exist_ok=True)
    peft.save_pretrained(str(tmp))
    state = load_file(tmp / PEFT_WEIGHTS)
    return CheckedAdapter("lora", tmp, state, json.loads((tmp / PEFT_CONFIG).read_text()))


@torch.no_grad()
def reference(base: LoadedBase, adapter: CheckedAdapter | None, prompt: list[int], max_new: int) -> list[int]:
    """Today's path: the request alone on a plugged copy, greedy `generate`."""
    model = plug_in(base, adapter) if adapter is not None else base.model
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,  # type: ignore[operator]
                         do_sample=False, pad_token_id=base.tokenizer.pad_token_id)
    return [int(t) for t in out[0, len(prompt):]]
