"""Benchmark: where an emulator-tuned adapter stops transferring (one task, one emulator variant).

On one task, per tuning seed, two adapters are tuned with the same data, rate and seed: one on the
FULL model (the utility upper bound) and one on the EMULATOR (what a data owner uploads). Scored on
the whole test split:

- `full_tuned` / `full_tuned_plugged`: the full-model adapter scored on the tuned model itself, and
  after the owner's path (adapter file written, checked against the emulator's key set, plugged into a
  fresh copy of the full model). The two must agree item by item; if they do not, the plug-in path is
  broken and no emulator result means anything.
- `full_bottom_only` / `full_top_only`: one half of the full-model adapter, the other blocks at the base
  weights: what each half is worth when it is tuned right (the reference for the mixes below).
- `emulator_fine_tuned`, `plug_in`: the emulator adapter on the emulator and plugged into the full model.
- `plug_in_bottom_only` / `plug_in_top_only`: only the emulator adapter's bottom (top) blocks plugged,
  the other blocks at the base weights: which half carries the transfer.
- `emulator_top_full_bottom` / `emulator_bottom_full_top`: one half from each adapter: whether a
  half transfers once the other half is right.

Per adapter block: the relative size of each update (||dW|| / ||W||) and the cosine between the two
updates (flattened over the block's parameters): whether the emulator moves a block the way the
full model does, after tuning rather than at initialisation (the gradient cosine of `fidelity_probe`).
With `calibration` set, the emulator's harmonizers are first refined on the task's unlabelled training
prompts (contexts and choices, never labels: `emulators/task_calibration.py`) and the data owner tunes
on that calibrated emulator. Emulator-full agreement on the test prompts (share of the same zero-shot
answer, mean KL over the choices; `evaluation/agreement.py`) is reported for the emulator tuned on,
and, when calibrating, for the emulator before calibration.
Every difference against `plug_in` is a paired bootstrap over test items and seeds (`stats`).
The learning rate is chosen on the validation split (the paper table's rule) unless given.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from benchmarks.offsite_tuning.full_tuning import tuned_copy
from benchmarks.offsite_tuning.records import Cell
from benchmarks.offsite_tuning.task_run import (
    Budget,
    Variant,
    adapter_blocks,
    calibrate_for_task,
    split,
    train_items,
    tuning_for,
    variant_emulator,
    variant_spec,
)
from benchmarks.offsite_tuning.tuning_select import select_task_lrs
from benchmarks.output import log, write_result
from benchmarks.reports.stats import as_matrix, bootstrap_mean, correctness_string, paired_difference
from data_owner_client.tuning.local import train_adapter
from model_owner_server import adapter_checks
from model_owner_server.adapter_checks import CheckedAdapter
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.emulators.task_calibration import CalibrationSettings
from model_owner_server.evaluation.agreement import compare_answers
from model_owner_server.plug_in import emulator_with_adapter, plug_in
from shared.adapter_format import block_tensors, save_adapter
from shared.artifacts import load_emulator
from shared.blocks import find_block_stack
from shared.data_formats import MCExample
from shared.scoring import score_multiple_choice
from shared.tasks import TaskData

# Rows plugged into the full model from halves: (where the bottom blocks come from, where the top ones do)
MIXES = {
    "full_bottom_only": ("full", "base"),
    "full_top_only": ("base", "full"),
    "plug_in": ("emulator", "emulator"),
    "plug_in_bottom_only": ("emulator", "base"),
    "plug_in_top_only": ("base", "emulator"),
    "emulator_top_full_bottom": ("full", "emulator"),
    "emulator_bottom_full_top": ("emulator", "full"),
}
ZERO_SHOT = ("full_zero_shot", "emulator_zero_shot")
ROWS = (*ZERO_SHOT, "full_tuned", "full_tuned_plugged", "full_bottom_only", "full_top_only", "emulator_fine_tuned",
        "plug_in", "plug_in_bottom_only", "plug_in_top_only", "emulator_top_full_bottom", "emulator_bottom_full_top")
ROW_TITLES = {
    "full_zero_shot": "full model, zero-shot",
    "emulator_zero_shot": "emulator, zero-shot",
    "full_tuned": "adapter tuned on the full model (scored on the tuned model)",
    "full_tuned_plugged": "the same adapter through the plug-in path",
    "full_bottom_only": "full-model adapter, bottom blocks only",
    "full_top_only": "full-model adapter, top blocks only",
    "emulator_fine_tuned": "emulator adapter on the emulator",
    "plug_in": "emulator adapter plugged in (all blocks)",
    "plug_in_bottom_only": "emulator adapter, bottom blocks only",
    "plug_in_top_only": "emulator adapter, top blocks only",
    "emulator_top_full_bottom": "emulator top + full-model bottom",
    "emulator_bottom_full_top": "emulator bottom + full-model top",
}


def _update_stats(base: dict[str, torch.Tensor], full: dict[str, torch.Tensor], emu: dict[str, torch.Tensor],
                  stack_path: str, blocks: list[int]) -> dict[str, dict[str, float]]:
    """Per block: ||dW|| / ||W|| of each adapter and the cosine between the two updates."""
    out: dict[str, dict[str, float]] = {}
    for i in blocks:
        keys = [k for k in base if k.startswith(f"{stack_path}.{i}.")]
        w = torch.cat([base[k].flatten().float() for k in keys])
        d_full = torch.cat([(full[k] - base[k]).flatten().float() for k in keys])
        d_emu = torch.cat([(emu[k] - base[k]).flatten().float() for k in keys])
        cos = torch.nn.functional.cosine_similarity(d_full, d_emu, dim=0)
        out[str(i)] = {"full_relative_update": float(d_full.norm() / w.norm()),
                       "emulator_relative_update": float(d_emu.norm() / w.norm()), "update_cosine": float(cos)}
    return out


def answer_profile(per_seed: list[list[int]], zero_shot: list[int], n_choices: int) -> dict[str, object]:
    """Share of the test items answered with each choice position, and share answered as the full model
    answers zero-shot, both averaged over seeds: whether a tuned model still gives the base model's answer."""
    shares = [[sum(a == k for a in answers) / len(answers) for k in range(n_choices)] for answers in per_seed]
    same = [sum(a == z for a, z in zip(answers, zero_shot, strict=True)) / len(answers) for answers in per_seed]
    return {"position_share": [sum(col) / len(col) for col in zip(*shares, strict=True)],
            "same_as_full_zero_shot": sum(same) / len(same)}


def run(base: LoadedBase, profile: ImportanceProfile, data: TaskData[MCExample], task: str, variant: Variant,
        budget: Budget, lr: float | None, out_dir: Path, label: str,
        calibration: CalibrationSettings | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    for p in base.model.parameters():
        p.requires_grad_(False)
    train, validation, test = split(data, budget)
    blocks = adapter_blocks(base, profile)
    cfg = profile.meta.config
    bottom, top = blocks[: cfg.adapter_bottom], blocks[cfg.adapter_bottom:]
    stack_path = find_block_stack(base.model).path
    if lr is None:
        choice = select_task_lrs(base.model, base.tokenizer, blocks, train, validation,
                                 tuning_for(budget, budget.lr_grid[0], budget.seeds[0]),
                                 {"adapter": budget.lr_grid}, log=log)["adapter"]
        lr, lr_source = choice.lr, f"validation ({choice.validation_acc})"
    else:
        lr_source = "given"
    log(f"{task}: lr {lr:g} ({lr_source}); {len(train)} train, {len(test)} test items")
    cells = {row: Cell.empty() for row in ROWS}
    answers: dict[str, list[list[int]]] = {row: [] for row in ROWS}  # per row, per seed: the chosen position
    zero_shot_lls: dict[str, list[list[float]]] = {}  # zero-shot rows: per test item, each choice's log-likelihood

    def score(row: str, model: PreTrainedModel) -> None:
        scored = score_multiple_choice(model, base.tokenizer, test)
        cells[row].acc.append(scored.acc)
        cells[row].correct.append(correctness_string(scored.correct))
        answers[row].append([p.pred for p in scored.predictions])
        if row in ZERO_SHOT:
            zero_shot_lls[row] = [p.loglikelihoods for p in scored.predictions]

    score("full_zero_shot", base.model)
    base_state = {k: v.clone() for k, v in block_tensors(base.model.state_dict(), stack_path, blocks).items()}
    updates: list[dict[str, dict[str, float]]] = []
    result: dict[str, Any] = {
        "benchmark": "transfer-split", "model": base.name, "task": task, "variant": variant.label,
        "profile_id": profile.meta.profile_id, "adapter_blocks": {"bottom": bottom, "top": top}, "lr": lr,
        "lr_source": lr_source, "n_train": len(train), "n_test": len(test), "seeds": list(budget.seeds),
        "rows": cells, "updates": updates, "calibration": None, "agreement_before_calibration": None,
        "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}}
    with tempfile.TemporaryDirectory(prefix="transfer-split-") as tmp:
        workdir = Path(tmp)
        emu_dir, manifest = variant_emulator(base, variant_spec(base, profile, variant), profile, workdir, log)
        emulator, _, _ = load_emulator(emu_dir)
        if calibration is not None:
            emu_dir, manifest, before = calibrate_for_task(base, emu_dir, manifest, train_items(data, budget),
                                                           workdir / "emulator-calibrated", log,
                                                           zero_shot_lls["full_zero_shot"], test, calibration)
            assert before is not None and manifest.calibration is not None
            result["agreement_before_calibration"] = before.model_dump()
            result["calibration"] = manifest.calibration.model_dump()
            emulator, _, _ = load_emulator(emu_dir)
        score("emulator_zero_shot", emulator)
        result["agreement"] = compare_answers(zero_shot_lls["full_zero_shot"],
                                              zero_shot_lls["emulator_zero_shot"]).model_dump()
        log(f"emulator-full agreement on the test prompts: {result['agreement']}")
        for seed in budget.seeds:
            config = tuning_for(budget, lr, seed)
            tuned = tuned_copy(base.model, base.tokenizer, "adapter", blocks, train, config)
            score("full_tuned", tuned)
            full_state = block_tensors(tuned.state_dict(), stack_path, blocks)
            del tuned
            full_dir = workdir / f"full-seed{seed}"
            save_adapter(full_state, manifest, full_dir)
            score("full_tuned_plugged", plug_in(base, adapter_checks.validate(full_dir, base, manifest)))
            emu_adapter_dir = workdir / f"emulator-seed{seed}"
            train_adapter(emu_dir, train, None, config, emu_adapter_dir)
            adapter = adapter_checks.validate(emu_adapter_dir, base, manifest)
            emu_state = adapter.state
            score("emulator_fine_tuned", emulator_with_adapter(emulator, manifest, adapter))
            sources = {"base": base_state, "full": full_state, "emulator": emu_state}
            for row, (bottom_from, top_from) in MIXES.items():
                state = {**block_tensors(sources[bottom_from], stack_path, bottom),
                         **block_tensors(sources[top_from], stack_path, top)}
                score(row, plug_in(base, CheckedAdapter("full", emu_adapter_dir, state)))
            updates.append(_update_stats(base_state, full_state, emu_state, stack_path, blocks))
            log(f"seed {seed}: " + ", ".join(f"{row} {cells[row].acc[-1]:.3f}" for row in ROWS
                                             if row not in ZERO_SHOT))
    plugged = as_matrix(cells["plug_in"].correct)
    result["vs_plug_in"] = {row: bootstrap_mean([paired_difference(as_matrix(cells[row].correct), plugged)])
                            for row in ROWS if row != "plug_in"}
    result["path_agrees"] = cells["full_tuned"].correct == cells["full_tuned_plugged"].correct
    result["answers"] = {row: answer_profile(answers[row], answers["full_zero_shot"][0],
                                               max(len(e.choices) for e in test))
                         for row in ROWS}
    result["seconds"] = time.perf_counter() - started
    write_result(out_dir, f"transfer-split-{label}", _jsonable(result), markdown(result))
    return result


def _agreement_lines(result: dict[str, Any]) -> list[str]:
    """Emulator-full agreement on the test prompts (and before calibration, when the emulator was calibrated)."""
    agreement = result.get("agreement")
    if agreement is None:
        return []
    lines = [f"Emulator-full agreement on the test prompts (same zero-shot answer; mean KL over the choices): "
             f"**{100 * agreement['agreement']:.1f}%**, KL {agreement['mean_kl']:.3f}."]
    record, before = result.get("calibration"), result.get("agreement_before_calibration")
    if record is not None and before is not None:
        lines.append(f"Calibrated on {record['n_prompts']} unlabelled training prompts ({record['steps']} steps, lr "
                     f"{record['lr']:g}, {record['seconds']:.0f} s; held-out KL {record['check_kl_before']:.4f} -> "
                     f"{record['check_kl_after']:.4f}, {'kept' if record['kept'] else 'discarded'}); before "
                     f"calibration: {100 * before['agreement']:.1f}%, KL {before['mean_kl']:.3f}.")
    return [*lines, ""]


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    out = dict(result)
    out["rows"] = {row: cell.model_dump() for row, cell in result["rows"].items()}
    out["vs_plug_in"] = {row: interval.model_dump() for row, interval in result["vs_plug_in"].items()}
    return out


def markdown(result: dict[str, Any]) -> str:
    rows: dict[str, Cell] = result["rows"]
    blocks = result["adapter_blocks"]
    lines = [f"# Where the adapter stops transferring: {result['task']}, {result['variant']}", "",
             f"{result['model']}, profile `{result['profile_id']}`, adapter blocks bottom {blocks['bottom']} / top "
             f"{blocks['top']}; {result['n_train']} training examples, the whole test split ({result['n_test']} "
             f"items), seeds {result['seeds']}, lr {result['lr']:g} ({result['lr_source']}). Differences: paired "
             "95% bootstrap over test items and seeds, in points.", "",
             f"The plug-in path reproduces the full-model-tuned adapter item by item: "
             f"**{'yes' if result['path_agrees'] else 'NO (defect)'}**.", "",
             *_agreement_lines(result),
             "Answers: the share of items a row answers as the full model answers zero-shot, and its most "
             "frequent answer (choice position, share of items); both averaged over seeds.", "",
             "| row | accuracy per seed | mean | vs plug-in | same answer as full zero-shot | most frequent answer |",
             "|---|---|---|---|---|---|"]
    for row in ROWS:
        cell = rows[row]
        diff = result["vs_plug_in"].get(row)
        ci = f"{diff.mean:+.1f} [{diff.ci95[0]:+.1f}, {diff.ci95[1]:+.1f}]" if diff is not None else "-"
        profile = result["answers"][row]
        shares = profile["position_share"]
        top = max(range(len(shares)), key=lambda k: shares[k])
        lines.append(f"| {ROW_TITLES[row]} | {' / '.join(f'{100 * a:.1f}' for a in cell.acc)} | "
                     f"{100 * cell.mean:.1f} | {ci} | {100 * profile['same_as_full_zero_shot']:.0f}% | "
                     f"{top} ({100 * shares[top]:.0f}%) |")
    lines += ["", "Per adapter block, mean over seeds: relative update ||dW|| / ||W|| of each adapter and the "
              "cosine between the two updates.", "",
              "| block | full-model update | emulator update | update cosine |", "|---|---|---|---|"]
    for block in result["updates"][0]:
        vals = [u[block] for u in result["updates"]]

        def mean(key: str, vals: list[dict[str, float]] = vals) -> float:
            return sum(v[key] for v in vals) / len(vals)

        lines.append(f"| {block} | {mean('full_relative_update'):.4f} | {mean('emulator_relative_update'):.4f} | "
                     f"{mean('update_cosine'):.3f} |")
    return "\n".join(lines) + "\n"
