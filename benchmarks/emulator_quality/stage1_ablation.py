"""Benchmark: what each part of stage 1 buys, by emulator perplexity on held-out calibration text.

Training-free rows (one capture of the middle blocks' activations, no end-to-end step):
- `drop / influence`: plain LayerDrop of the k blocks of lowest block influence;
- `fit r / influence` and `fit r / fit_error`: per-block regression harmonizers of rank r, placed
  by block influence or by their own held-out imitation error.
With a stage-1 profile (the default config, built if missing):
- `profile / learned` vs `profile / init`: the profile's trained harmonizers placed by the learned
  importance or by the ranking stage 1 started from, i.e. whether the RL step improved on it.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.output import write_result
from model_owner_server.base_models import LoadedBase, load_base_model
from model_owner_server.emulators.build import generate_emulator
from model_owner_server.emulators.calibration import block_influence, capture_middle, sample_sequences
from model_owner_server.emulators.fidelity import held_out_windows
from model_owner_server.emulators.harmonizer_fit import fit_all
from model_owner_server.emulators.obtain import obtain_profile
from model_owner_server.emulators.policy import deployed_mask
from model_owner_server.emulators.profile import ImportanceProfile, Stage1Config
from model_owner_server.emulators.selection import middle_indices, n_replaced
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.emulators.stage1 import token_stream
from model_owner_server.emulators.stage1_init import HELD_OUT_SEQUENCES
from shared.blocks import activation_name, find_block_stack, set_block_stack, text_config
from shared.corpora import calibration_split
from shared.harmonizer import Harmonizer, HarmonizerConfig
from shared.perplexity import perplexity

ALPHAS = (0.25, 0.5, 0.75)


def _swapped_ppl(base: LoadedBase, replaced: set[int], harmonizers: dict[int, Harmonizer] | None,
                 windows: torch.Tensor) -> float:
    stack = find_block_stack(base.model)
    if harmonizers is None:
        blocks = nn.ModuleList([b for i, b in enumerate(stack.blocks) if i not in replaced])
    else:
        blocks = nn.ModuleList([harmonizers[i] if i in replaced else b for i, b in enumerate(stack.blocks)])
    set_block_stack(base.model, stack.path, blocks)
    try:
        return perplexity(base.model, windows)
    finally:
        set_block_stack(base.model, stack.path, stack.blocks)


def training_free_rows(base: LoadedBase, config: Stage1Config, ranks: list[int], windows: torch.Tensor,
                       log: Any) -> list[dict[str, Any]]:
    middle = middle_indices(base.num_layers, config.adapter_bottom, config.adapter_top)
    stream = token_stream(base, calibration_split()[0])
    split = int(stream.numel() * 0.95)
    fit_ids = sample_sequences(stream[:split], config.fit_sequences, config.seq_len, torch.Generator().manual_seed(0))
    held_ids = sample_sequences(stream[split:], HELD_OUT_SEQUENCES, config.seq_len, torch.Generator().manual_seed(1))
    fit = capture_middle(base.model, middle, fit_ids)
    held = capture_middle(base.model, middle, held_ids)
    influence = block_influence(held)
    by_influence = {a: {middle[p] for p in deployed_mask(influence, n_replaced(len(middle), a))} for a in ALPHAS}
    rows = [{"variant": "drop / influence", **{str(a): _swapped_ppl(base, by_influence[a], None, windows)
                                                for a in ALPHAS}}]
    log(rows[-1])
    blocks = find_block_stack(base.model).blocks
    hidden = text_config(base.model.config).hidden_size
    for rank in ranks:
        torch.manual_seed(config.seed)
        hcfg = HarmonizerConfig(rank=rank, activation=activation_name(base.model.config))
        harmonizers = {i: Harmonizer.for_block(blocks[i], hidden, hcfg) for i in middle}
        started = time.perf_counter()
        errors = fit_all(harmonizers, fit, held, config.fit_steps, config.fit_lr, 2048, config.seed)
        fit_s = time.perf_counter() - started
        err = [errors[i] for i in middle]
        by_error = {a: {middle[p] for p in deployed_mask(err, n_replaced(len(middle), a))} for a in ALPHAS}
        for name, placing in (("influence", by_influence), ("fit_error", by_error)):
            rows.append({"variant": f"fit r{rank} / {name}", "fit_seconds": fit_s,
                         **{str(a): _swapped_ppl(base, placing[a], harmonizers, windows) for a in ALPHAS}})
            log(rows[-1])
    return rows


def profile_rows(base: LoadedBase, profile: ImportanceProfile, windows: torch.Tensor, log: Any) -> list[dict[str, Any]]:
    assert profile.meta.init is not None
    start = ImportanceProfile(profile.meta.model_copy(update={"importance": profile.meta.init.importance}),
                              profile.harmonizers)
    rows = []
    for name, p in (("learned", profile), ("init", start)):
        row: dict[str, Any] = {"variant": f"profile / {name}"}
        for a in ALPHAS:
            spec = EmulatorSpec(base_model=base.name, alpha=a, adapter_bottom=profile.meta.config.adapter_bottom,
                                adapter_top=profile.meta.config.adapter_top)
            emulator, _ = generate_emulator(base, spec, p)
            row[str(a)] = perplexity(emulator, windows)
        rows.append(row)
        log(row)
    return rows


def run(model: str, ranks: list[int], out_dir: Path, with_profile: bool = True) -> dict[str, Any]:
    base = load_base_model(model)
    for p in base.model.parameters():
        p.requires_grad_(False)
    config = Stage1Config()
    windows = held_out_windows(base.tokenizer)

    def log(row: dict[str, Any]) -> None:
        print(_line(row), flush=True)

    full = perplexity(base.model, windows)
    rows = training_free_rows(base, config, ranks, windows, log)
    profile_id = None
    if with_profile:
        profile = obtain_profile(base, config)
        profile_id = profile.meta.profile_id
        rows += profile_rows(base, profile, windows, log)
    result = {"benchmark": "stage1-ablation", "model": model, "full_ppl": full, "alphas": list(ALPHAS),
              "config": config.model_dump(), "profile_id": profile_id, "rows": rows,
              "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}}
    write_result(out_dir, f"stage1-ablation-{Path(model).name}", result, markdown(result))
    return result


def _line(row: dict[str, Any]) -> str:
    return f"| {row['variant']} | " + " | ".join(f"{row[str(a)]:.1f}" for a in ALPHAS) + " |"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# What each part of stage 1 buys ({result['model']}, full model perplexity {result['full_ppl']:.1f})",
             "", "Perplexity on held-out calibration text (24 windows x 256 tokens) of emulators at each alpha "
             "(adapter 2 + 2, beta 0).", "",
             "| variant | " + " | ".join(f"alpha {a}" for a in result["alphas"]) + " |",
             "|---|" + "---|" * len(result["alphas"])]
    lines += [_line(r) for r in result["rows"]]
    return "\n".join(lines) + "\n"
