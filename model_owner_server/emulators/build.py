"""Stage 2: generate an emulator for any (N_a, alpha, beta) from the base model and its profile.

`scaleot`: replace the round(alpha*M) least important middle blocks with their trained harmonizers
and apply SRC (rank fraction beta removed) to the attention projections of the kept middle blocks.
`uniform`: Offsite-Tuning LayerDrop, evenly spaced kept blocks, the rest dropped (SRC still applies
when beta > 0, so both methods are compared at the same (alpha, beta)).
With SRC and harmonizers (beta > 0, `options.refit`), the harmonizers are then re-fitted to the
compressed blocks around them (`src_refit.py`). `uniform` with `options.distill` is Offsite-Tuning's
distilled emulator (OT-KD): its kept middle blocks are distilled toward the full model (`distill.py`).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch
from transformers import PreTrainedModel

from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.distill import DistillSettings, distill_kept_blocks
from model_owner_server.emulators.profile import CALIBRATION_CORPUS, ImportanceProfile
from model_owner_server.emulators.selection import (
    least_important,
    middle_indices,
    n_replaced,
    uniform_kept,
)
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.src import low_rank_factors, src_rank
from model_owner_server.emulators.src_refit import RefitProgress, RefitSettings, refit_harmonizers
from model_owner_server.emulators.stage1 import token_stream
from shared.artifacts import write_emulator
from shared.blocks import activation_name, find_block_stack, text_config
from shared.corpora import calibration_split
from shared.emulator_model import build_skeleton, emulator_config, materialize, src_projections
from shared.harmonizer import Harmonizer, HarmonizerConfig
from shared.low_rank import linear_weight
from shared.manifest import DistillRecord, EmulatorManifest, LayerEntry, LayerKind, RefitRecord
from shared.precision import dtype_name, model_dtype

DEFAULT_SEED = 0


@dataclass(frozen=True)
class LayerPlan:
    """Per full-model block: adapter, kept, harmonizer (replaced) or absent (dropped)."""

    entries: list[LayerEntry]
    harmonizer: HarmonizerConfig | None


def plan_layers(
    spec: EmulatorSpec,
    num_layers: int,
    base_blocks: torch.nn.ModuleList,
    profile: ImportanceProfile | None,
    activation: str,
) -> LayerPlan:
    spec.check_against(num_layers)
    middle = middle_indices(num_layers, spec.adapter_bottom, spec.adapter_top)
    n_rep = n_replaced(len(middle), spec.alpha)
    use_harmonizers = spec.method == "scaleot" and spec.options.harmonizers
    if spec.method == "scaleot" and spec.options.importance:
        if profile is None:
            raise ValueError("the scaleot method with learned importance needs a stage-1 profile")
        importance = profile.importance_of()
        replaced = set(least_important(middle, [importance[i] for i in middle], n_rep))
    else:
        replaced = set(middle) - set(uniform_kept(middle, len(middle) - n_rep))
    compress = spec.beta > 0 and (spec.method == "uniform" or spec.options.src)

    entries: list[LayerEntry] = []
    for full in range(num_layers):
        if full not in middle:
            kind = LayerKind.adapter
        elif full in replaced:
            if not use_harmonizers:
                continue  # LayerDrop
            kind = LayerKind.harmonizer
        else:
            kind = LayerKind.kept_src if compress else LayerKind.kept
        ranks: dict[str, int] = {}
        if kind == LayerKind.kept_src:
            for name, module in src_projections(base_blocks[full]).items():
                out_f, in_f = linear_weight(module)[0].shape
                ranks[name] = src_rank(out_f, in_f, spec.beta)
        entries.append(LayerEntry(emulator_index=len(entries), full_index=full, kind=kind, src_ranks=ranks))

    hcfg: HarmonizerConfig | None = None
    if use_harmonizers:
        hcfg = profile.meta.harmonizer if profile is not None else HarmonizerConfig(activation=activation)
    return LayerPlan(entries, hcfg)


def _block_state(
    entry: LayerEntry,
    block: torch.nn.Module,
    profile: ImportanceProfile | None,
    spec: EmulatorSpec,
    hidden: int,
    hcfg: HarmonizerConfig | None,
) -> dict[str, torch.Tensor]:
    if entry.kind == LayerKind.harmonizer:
        if profile is not None and spec.options.harmonizers:
            return {k: v.clone() for k, v in profile.harmonizer_state(entry.full_index).items()}
        assert hcfg is not None
        return Harmonizer.for_block(block, hidden, hcfg).state_dict()
    state = {k: v.detach().clone() for k, v in block.state_dict().items()}
    if entry.kind == LayerKind.kept_src:
        projections = src_projections(block)
        for name, rank in entry.src_ranks.items():
            for key in [k for k in state if k.startswith(f"{name}.")]:
                del state[key]
            for part, tensor in low_rank_factors(projections[name], rank).items():
                state[f"{name}.{part}"] = tensor
    return state


def generate_emulator(
    base: LoadedBase, spec: EmulatorSpec, profile: ImportanceProfile | None, seed: int = DEFAULT_SEED,
    on_progress: RefitProgress | None = None, refit_settings: RefitSettings | None = None,
    distill_settings: DistillSettings | None = None,
) -> tuple[PreTrainedModel, EmulatorManifest]:
    """The emulator model (a fresh transformers model, sharing no storage with `base`) and manifest.

    Its weights are in the base model's dtype, the profile's float32 harmonizers included: the
    artifact is written in that dtype, and the client loads whatever dtype the artifact has.
    `on_progress` hears from the harmonizer re-fit after SRC and the OT-KD distillation, the steps that take long."""
    model = base.model
    dtype = model_dtype(model)
    stack = find_block_stack(model)
    num_layers = len(stack)
    plan = plan_layers(spec, num_layers, stack.blocks, profile, activation_name(model.config))
    config = emulator_config(model.config, [e.full_index for e in plan.entries])
    emulator = build_skeleton(config, plan.entries, plan.harmonizer, dtype)
    hidden = text_config(model.config).hidden_size

    prefix = f"{stack.path}."
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    for entry in plan.entries:
        block_state = _block_state(entry, stack.blocks[entry.full_index], profile, spec, hidden, plan.harmonizer)
        state.update({f"{prefix}{entry.emulator_index}.{k}": v for k, v in block_state.items()})
    materialize(emulator, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})

    pid = profile.meta.profile_id if (profile is not None and spec.uses_profile) else None
    seed = profile.meta.config.seed if pid is not None and profile is not None else seed
    refit: RefitRecord | None = None
    if spec.refits_harmonizers:
        # The built-in calibration corpus's training split (a profile trained on custom text has not kept it).
        stream = token_stream(base, calibration_split()[0])
        refit = refit_harmonizers(model, emulator, plan.entries, stream, CALIBRATION_CORPUS, seed, refit_settings,
                                  on_progress)
    distill: DistillRecord | None = None
    if spec.distills:
        stream = token_stream(base, calibration_split()[0])
        distill = distill_kept_blocks(model, emulator, spec.adapter_bottom, spec.adapter_top, stream,
                                      CALIBRATION_CORPUS, seed, distill_settings, on_progress)
    manifest = EmulatorManifest(
        emulator_id=spec.emulator_id(base.weights_sha256, pid, base.dtype),
        base_model=base.name,
        base_model_sha256=base.weights_sha256,
        method=spec.method,
        adapter_bottom=spec.adapter_bottom,
        adapter_top=spec.adapter_top,
        alpha=spec.alpha,
        beta=spec.beta,
        options=spec.options,
        seed=seed,
        num_full_layers=num_layers,
        layers=plan.entries,
        harmonizer=plan.harmonizer,
        refit=refit,
        distill=distill,
        profile_id=pid,
        dtype=dtype_name(dtype),
        library_versions=library_versions(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return emulator, manifest


def build_emulator(
    base: LoadedBase, spec: EmulatorSpec, profile: ImportanceProfile | None, out_dir: Path,
    on_progress: RefitProgress | None = None,
) -> EmulatorManifest:
    emulator, manifest = generate_emulator(base, spec, profile, on_progress=on_progress)
    return write_emulator(emulator, base.tokenizer, manifest, out_dir)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "safetensors", "scaleot"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions
