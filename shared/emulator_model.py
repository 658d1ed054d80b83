"""Build the module structure of an emulator from its layer map.

Both parties use this: the model owner fills the skeleton with weights when it generates an
emulator, the data owner fills it from `emulator.safetensors`. The result is an ordinary
transformers causal LM whose block list mixes original blocks and harmonizers, renumbered so the KV
cache and `generate` work.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from shared.blocks import attention_module, find_block_stack, text_config
from shared.harmonizer import Harmonizer, HarmonizerConfig
from shared.low_rank import LowRankLinear, is_projection, linear_weight
from shared.manifest import LayerEntry, LayerKind
from shared.meta_init import empty_parameters


def emulator_config(base: PretrainedConfig, full_indices: list[int]) -> PretrainedConfig:
    """The base config with only the given blocks (per-layer lists such as `layer_types` subset)."""
    config = copy.deepcopy(base)
    cfg = text_config(config)
    n_full = cfg.num_hidden_layers
    layer_types = getattr(cfg, "layer_types", None)
    cfg.num_hidden_layers = len(full_indices)
    if isinstance(layer_types, list) and len(layer_types) == n_full:
        cfg.layer_types = [layer_types[i] for i in full_indices]
    return config


def src_projections(block: nn.Module) -> dict[str, nn.Module]:
    """Attention projections of a block that SRC compresses, by name relative to the block."""
    attn = attention_module(block)
    attn_name = next(name for name, child in block.named_children() if child is attn)
    return {f"{attn_name}.{name}": module for name, module in attn.named_modules() if is_projection(module)}


def low_rank_like(module: nn.Module, rank: int) -> LowRankLinear:
    weight, bias = linear_weight(module)
    out_features, in_features = weight.shape
    return LowRankLinear(in_features, out_features, rank, bias=bias is not None)


def build_skeleton(
    config: PretrainedConfig,
    layers: list[LayerEntry],
    harmonizer: HarmonizerConfig | None,
    dtype: torch.dtype = torch.float32,
) -> PreTrainedModel:
    """An emulator (config from `emulator_config`) with parameters on the meta device.

    Fill it with `materialize`.
    """
    if text_config(config).num_hidden_layers != len(layers) or [e.emulator_index for e in layers] != list(
        range(len(layers))
    ):
        raise ValueError("layer map does not match the emulator config's block count")
    # Parameters on meta (no 100M-parameter random init), buffers such as rotary tables real.
    with empty_parameters():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    stack = find_block_stack(model)
    hidden = text_config(config).hidden_size
    for entry in layers:
        block = stack.blocks[entry.emulator_index]
        if entry.kind == LayerKind.harmonizer:
            if harmonizer is None:
                raise ValueError("layer map has harmonizers but no harmonizer config")
            with empty_parameters():
                stack.blocks[entry.emulator_index] = Harmonizer.for_block(block, hidden, harmonizer)
        elif entry.kind == LayerKind.kept_src:
            projections = src_projections(block)
            unknown = set(entry.src_ranks) - set(projections)
            if unknown:
                raise ValueError(f"layer {entry.emulator_index}: unknown SRC projections {sorted(unknown)}")
            for name, rank in entry.src_ranks.items():
                with empty_parameters():
                    block.set_submodule(name, low_rank_like(projections[name], rank))
    return model


def materialize(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """Assign `state` into a skeleton; exact key set except weights tied to one another."""
    expected = set(model.state_dict().keys())
    unexpected = sorted(set(state) - expected)
    if unexpected:
        raise KeyError(f"unexpected tensors for this emulator: {unexpected[:10]}")
    model.load_state_dict(state, strict=False, assign=True)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    still_empty = [n for n, p in model.named_parameters(remove_duplicate=False) if p.device.type == "meta"]
    if still_empty:
        raise KeyError(f"missing tensors for this emulator: {still_empty[:10]}")
    model.eval()
    return model
