"""Decoder-block discovery for any transformers causal LM, without a per-family `isinstance` chain.

A causal LM keeps its decoder blocks in one `nn.ModuleList` whose length is the config's number of
hidden layers (`model.layers` for Llama/Qwen2/Gemma, `transformer.h` for GPT-2,
`model.decoder.layers` for OPT). We find that list structurally, so a new family works as long as
it follows the same convention, and anything else gets a clear `UnsupportedModelError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig


class UnsupportedModelError(ValueError):
    """The model has no recognisable stack of decoder blocks."""


_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_ACTIVATION_KEYS = ("hidden_act", "hidden_activation", "activation_function")


def text_config(config: PretrainedConfig) -> PretrainedConfig:
    """The decoder's config (multimodal configs nest it)."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def num_layers(config: PretrainedConfig) -> int:
    cfg = text_config(config)
    for key in _LAYER_COUNT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise UnsupportedModelError(
        f"{type(config).__name__} declares no layer count ({', '.join(_LAYER_COUNT_KEYS)}); "
        "only decoder-only causal LMs from transformers are supported"
    )


def activation_name(config: PretrainedConfig) -> str:
    cfg = text_config(config)
    for key in _ACTIVATION_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, str):
            return value
    return "gelu"


@dataclass(frozen=True)
class BlockStack:
    """Where a model keeps its decoder blocks."""

    path: str  # dotted attribute path of the ModuleList, e.g. "model.layers"
    blocks: nn.ModuleList

    def __len__(self) -> int:
        return len(self.blocks)


def find_block_stack(model: nn.Module, expected: int | None = None) -> BlockStack:
    """Return the ModuleList of decoder blocks: homogeneous, of the configured length."""
    if expected is None:
        config = getattr(model, "config", None)
        if config is None:
            raise UnsupportedModelError(f"{type(model).__name__} has no config; pass the block count")
        expected = num_layers(config)
    candidates: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) != expected or expected == 0:
            continue
        kinds = {type(child).__name__ for child in module}
        # Emulators mix original blocks with harmonizers; everything else must be one class.
        kinds.discard("Harmonizer")
        if len(kinds) <= 1:
            candidates.append((name, module))
    if not candidates:
        raise UnsupportedModelError(
            f"could not find the decoder blocks of {type(model).__name__}: no nn.ModuleList of "
            f"{expected} identical blocks. Supported: decoder-only transformers causal LMs "
            "(Llama, Qwen2, Gemma, GPT-2, OPT, ...)"
        )
    # The outermost match is the decoder stack (inner lists, e.g. experts, are deeper).
    name, blocks = min(candidates, key=lambda item: item[0].count("."))
    return BlockStack(path=name, blocks=blocks)


def set_block_stack(model: nn.Module, path: str, blocks: nn.ModuleList) -> None:
    """Put `blocks` at the dotted `path` of `model` (swap a stack in and out; other submodules: `set_submodule`)."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, blocks)


def attention_module(block: nn.Module) -> nn.Module:
    """The self-attention submodule of a decoder block (the one class-named *Attention)."""
    for child in block.children():
        if "attention" in type(child).__name__.lower():
            return child
    raise UnsupportedModelError(f"block {type(block).__name__} has no *Attention child module")


# Attribute names of the norm applied to a block's input, across families: Llama, Qwen2/3, Gemma 1-3,
# Mistral, Phi, GPT-NeoX, Falcon, Bloom (input_layernorm); GPT-2, GPT-J, CodeGen (ln_1); OPT
# (self_attn_layer_norm); Falcon's new decoder (ln_attn); MPT (norm_1).
_INPUT_NORM_NAMES = ("input_layernorm", "ln_1", "self_attn_layer_norm", "ln_attn", "norm_1", "attention_norm")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or "norm" in type(module).__name__.lower()


def _hidden_width(module: nn.Module, hidden_size: int) -> bool:
    """Every parameter is a vector of the hidden size (a parameter-free norm fits any width)."""
    return all(p.dim() == 1 and p.numel() == hidden_size for p in module.parameters(recurse=False))


def input_norm(block: nn.Module, hidden_size: int) -> nn.Module:
    """The normalisation a decoder block applies to its input (hidden width), to seed a harmonizer.

    Found by the known attribute names first, then as the first norm that is a DIRECT child of the
    block with hidden-width weights. Norms nested inside attention (`q_norm`/`k_norm` of Qwen3,
    Gemma 3, OLMo 2: head width) are never chosen. Post-norm blocks without an input norm (OLMo 2)
    yield their first hidden-width norm (`post_attention_layernorm`): the harmonizer only needs a
    norm of the family at hidden width, and trains it. Unsupported: blocks with no hidden-width norm
    among their direct children (the norm applied functionally, or nested in a sub-module).
    """
    for name in _INPUT_NORM_NAMES:
        module = getattr(block, name, None)
        if isinstance(module, nn.Module) and _is_norm(module) and _hidden_width(module, hidden_size):
            return module
    for module in block.children():
        if _is_norm(module) and any(True for _ in module.parameters()) and _hidden_width(module, hidden_size):
            return module
    raise UnsupportedModelError(
        f"block {type(block).__name__} has no input normalisation of width {hidden_size}: none of "
        f"{', '.join(_INPUT_NORM_NAMES)} and no *Norm direct child with hidden-size weights. Supported: blocks "
        "that hold their hidden-width norms as direct children (pre-norm Llama, Qwen, Gemma, GPT-2, OPT, ...; "
        "post-norm OLMo 2)"
    )
