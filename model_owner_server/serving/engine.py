"""Forward passes of a mixed batch on the served copy, with a KV cache that rows join and leave.

The batch is left-padded: row i's real tokens end at the last column, its attention mask is 0 over
its padding and its position ids count its own tokens only (as `generate` does for a padded batch), so
a row computes what it would alone. Rows that join are prefilled as their own batch and merged into
the running one (both caches left-padded to the longer); rows that finish are dropped, and columns
that are padding in every remaining row are cut off, so the cache does not keep growing with padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from model_owner_server.serving.adapters import LoadedAdapter
from model_owner_server.serving.routed import Group, Router


@dataclass
class BatchState:
    cache: DynamicCache
    mask: torch.Tensor  # (rows, columns) 1 where the cache holds a real token
    next_pos: torch.Tensor  # (rows,) position id of each row's next token
    adapters: list[LoadedAdapter | None]

    @property
    def size(self) -> int:
        return len(self.adapters)


class Engine:
    def __init__(self, model: PreTrainedModel, router: Router, pad_id: int) -> None:
        self.model = model
        self.router = router
        self.pad_id = pad_id
        self.device = next(model.parameters()).device

    def _groups(self, adapters: list[LoadedAdapter | None]) -> list[Group]:
        by_key: dict[str | None, list[int]] = {}
        found: dict[str | None, LoadedAdapter | None] = {}
        for row, adapter in enumerate(adapters):
            key = adapter.key if adapter is not None else None
            by_key.setdefault(key, []).append(row)
            found[key] = adapter
        return [Group(torch.tensor(rows, device=self.device), found[key]) for key, rows in by_key.items()]

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: DynamicCache,
                 adapters: list[LoadedAdapter | None]) -> torch.Tensor:
        self.router.groups = self._groups(adapters)
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                             logits_to_keep=1)
        finally:
            self.router.groups = []
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def prefill(self, prompts: list[list[int]], adapters: list[LoadedAdapter | None]
                ) -> tuple[BatchState, torch.Tensor]:
        """Run the prompts (left-padded together); (their batch state, next-token logits per row)."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, pos, cache, adapters)
        return BatchState(cache, mask, mask.sum(-1), list(adapters)), logits

    def decode(self, state: BatchState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row's last sampled token; next-token logits per row."""
        state.mask = torch.cat([state.mask, state.mask.new_ones((state.size, 1))], dim=1)
        logits = self._forward(tokens.to(self.device).view(-1, 1), state.mask, state.next_pos.view(-1, 1),
                               state.cache, state.adapters)
        state.next_pos = state.next_pos + 1
        return logits


def mergeable(cache: DynamicCache) -> bool:
    """Whether rows can be merged and dropped by slicing: full-attention layers only (a sliding-window
    layer keeps a window per its own length, which padding would shift)."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    return [layer for layer in cache.layers if isinstance(layer, DynamicLayer)]


def select_rows(state: BatchState, keep: list[int]) -> BatchState:
    """The rows `keep` of the batch (in that order), leading all-padding columns cut off."""
    index = torch.tensor(keep, device=state.mask.device)
    mask = state.mask.index_select(0, index)
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else mask.shape[1]
    for layer in _layers(state.cache):
        assert layer.keys is not None and layer.values is not None  # filled by the prefill
        layer.keys = layer.keys.index_select(0, index)[..., start:, :]
        layer.values = layer.values.index_select(0, index)[..., start:, :]
    return BatchState(state.cache, mask[:, start:], state.next_pos.index_select(0, index),
                      [state.adapters[i] for i in keep])


def _left_pad(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge(first: BatchState, second: BatchState) -> BatchState:
    """One batch of `first`'s rows then `second`'s, the shorter cache left-padded to the longer."""
    width = max(first.mask.shape[1], second.mask.shape[1])
    pads = (width - first.mask.shape[1], width - second.mask.shape[1])
    for mine, theirs in zip(_layers(first.cache), _layers(second.cache), strict=True):
        assert mine.keys is not None and mine.values is not None and theirs.keys is not None
        assert theirs.values is not None
        mine.keys = torch.cat([_left_pad(mine.keys, pads[0], -2), _left_pad(theirs.keys, pads[1], -2)])
        mine.values = torch.cat([_left_pad(mine.values, pads[0], -2), _left_pad(theirs.values, pads[1], -2)])
    mask = torch.cat([_left_pad(first.mask, pads[0], 1), _left_pad(second.mask, pads[1], 1)])
    return BatchState(first.cache, mask, torch.cat([first.next_pos, second.next_pos]),
                      first.adapters + second.adapters)
