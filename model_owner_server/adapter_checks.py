"""Every check of an adapter directory against its emulator, in one place: `validate`.

Uploads, evaluation jobs and generation all call `validate`, so a stored adapter is held to the same
rules as a new one (the emulator id in its metadata, its LoRA layers against the adapter blocks).
Each file is read once: the LoRA config's bytes once, each safetensors header parsed once and used
for the metadata, key-set, shape and dtype checks before the tensors are loaded (and checked finite).
`validate` writes nothing: the upload stores the canonical config itself (`write_canonical_config`),
since a stored adapter's directory is read-only for evaluation and generation.
Every problem found is reported at once, in the order uploads have always listed them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from model_owner_server.base_models import LoadedBase
from shared.adapter_format import (
    ADAPTER_FILE,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    AdapterError,
    SafetensorsHeader,
    TensorInfo,
    expected_adapter_tensors,
    load_checked,
    read_header,
)
from shared.blocks import find_block_stack
from shared.lora_config import loose_object, parse_lora_config
from shared.low_rank import is_projection, linear_weight
from shared.manifest import EmulatorManifest


@dataclass
class CheckedAdapter:
    kind: Literal["full", "lora"]
    directory: Path
    state: dict[str, torch.Tensor]  # full: base-model keys; lora: PEFT keys (full-model indices)
    lora_config: dict[str, object] | None = None  # lora: the canonical config (`shared.lora_config`)


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


def block_problems(base: LoadedBase, manifest: EmulatorManifest, config: dict[str, Any]) -> list[str]:
    """LoRA layers that are no adapter blocks, target modules that name no projection of them (each
    checked only where the field is well-typed: the schema reports the rest)."""
    problems: list[str] = []
    allowed = manifest.adapter_indices()
    layers = config.get("layers_to_transform")
    if isinstance(layers, list) and all(isinstance(i, int) for i in layers):
        outside = sorted(set(layers) - set(allowed))
        if outside:
            problems.append(f"{PEFT_CONFIG}: layers_to_transform {outside[:20]} are not adapter blocks of this "
                            f"emulator (adapter blocks: {sorted(allowed)})")
    stack = find_block_stack(base.model)
    pattern = config.get("layers_pattern")
    if isinstance(pattern, str) and pattern != stack.path.rsplit(".", 1)[-1]:
        problems.append(f"{PEFT_CONFIG}: layers_pattern {pattern[:80]!r} is not the block list of this model "
                        f"({stack.path.rsplit('.', 1)[-1]!r}, or null)")
    targets = config.get("target_modules")
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        names = {name.rsplit(".", 1)[-1] for i in allowed if 0 <= i < len(stack.blocks)
                 for name, module in stack.blocks[i].named_modules() if name and is_projection(module)}
        problems += [f"{PEFT_CONFIG}: target_modules {name[:80]!r} is no projection of the adapter blocks "
                     f"(projections: {', '.join(sorted(names))})" for name in targets if name not in names]
    return problems


def _header(path: Path) -> SafetensorsHeader | AdapterError:
    """The parsed header, or why it cannot be parsed (reported where the old order reported it)."""
    try:
        return read_header(path)
    except AdapterError as exc:
        return exc


def _metadata_problems(name: str, header: SafetensorsHeader | AdapterError, manifest: EmulatorManifest) -> list[str]:
    """An adapter whose metadata names another emulator was tuned on something else (an unreadable header
    is reported by the header check instead)."""
    if isinstance(header, AdapterError):
        return []
    recorded = header.metadata.get("emulator_id")
    if recorded and recorded != manifest.emulator_id:
        return [f"{name}: tuned on emulator {recorded}, not {manifest.emulator_id}; upload it with "
                f"emulator_id={recorded} or tune on this emulator"]
    return []


def _load(path: Path, header: SafetensorsHeader | AdapterError, expected: dict[str, TensorInfo]
          ) -> dict[str, torch.Tensor]:
    if isinstance(header, AdapterError):
        raise header
    return load_checked(path, expected, header)


def _validate_full(directory: Path, base: LoadedBase, manifest: EmulatorManifest) -> CheckedAdapter:
    path = directory / ADAPTER_FILE
    header = _header(path)
    problems = _metadata_problems(ADAPTER_FILE, header, manifest)
    try:
        state = _load(path, header, expected_full_tensors(base, manifest))
    except AdapterError as exc:
        raise AdapterError(problems + exc.problems) from exc
    if problems:
        raise AdapterError(problems)
    return CheckedAdapter("full", directory, state)


def _validate_lora(directory: Path, base: LoadedBase, manifest: EmulatorManifest) -> CheckedAdapter:
    path = directory / PEFT_WEIGHTS
    header = _header(path)
    problems = _metadata_problems(PEFT_WEIGHTS, header, manifest)
    raw = (directory / PEFT_CONFIG).read_bytes()
    try:
        config = parse_lora_config(raw)
        config_problems = block_problems(base, manifest, config)
    except AdapterError as exc:
        config, config_problems = {}, exc.problems + block_problems(base, manifest, loose_object(raw))
    if config_problems:  # the config is unusable: report the weights' header problems too, not its key set
        header_problems = header.problems if isinstance(header, AdapterError) else []
        raise AdapterError(problems + config_problems + header_problems)
    expected, tensor_problems = expected_lora_tensors(base, manifest, config)
    try:
        state = _load(path, header, expected)
    except AdapterError as exc:
        tensor_problems += exc.problems
        state = {}
    if problems or tensor_problems:
        raise AdapterError(problems + tensor_problems)
    return CheckedAdapter("lora", directory, state, config)


def validate(directory: Path, base: LoadedBase, manifest: EmulatorManifest) -> CheckedAdapter:
    """The adapter in `directory` (full-block safetensors, or a PEFT LoRA pair) checked against the emulator
    and loaded; AdapterError listing every problem otherwise."""
    if (directory / ADAPTER_FILE).is_file():
        return _validate_full(directory, base, manifest)
    if (directory / PEFT_CONFIG).is_file() and (directory / PEFT_WEIGHTS).is_file():
        return _validate_lora(directory, base, manifest)
    # no directory in the message: it is a server path, and the reason reaches API answers and job errors
    raise AdapterError([f"no {ADAPTER_FILE} and no PEFT pair {PEFT_CONFIG} + {PEFT_WEIGHTS}"])


def write_canonical_config(adapter: CheckedAdapter) -> None:
    """Rewrite an uploaded LoRA config in the canonical form that was checked, so that what PEFT loads and
    what is stored is exactly that (the upload's own scratch copy; stored adapters are never rewritten)."""
    if adapter.kind == "lora":
        (adapter.directory / PEFT_CONFIG).write_text(json.dumps(adapter.lora_config, indent=2) + "\n")
