"""Benchmark: the Offsite-Tuning / ScaleOT table reproduced on a real model.

For each task: build each emulator from the cached stage-1 profile (artifact on disk), tune the
adapter on it exactly as the data owner does (`train_adapter`), check and plug the adapter in as
the owner does, and score every row of the matrix on the test split. The full fine-tuning upper
bound tunes the same adapter blocks directly on the full model with the same budget. Tuning
throughput of emulator vs full model is measured side by side in the same run.
"""

from __future__ import annotations

import copy
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_owner_client.tuning.config import TuningConfig
from data_owner_client.tuning.local import train_adapter
from data_owner_client.tuning.trainer import tune
from model_owner_server.base_models import BaseModel
from model_owner_server.emulators.build import build_emulator
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.emulators.spec import EmulatorSpec
from model_owner_server.evaluation.matrix import Score, score_model
from model_owner_server.evaluation.run import evaluate_adapter
from model_owner_server.plug_in import check_adapter
from shared.artifacts import load_emulator
from shared.tasks import as_training_examples, load_mc_task


@dataclass(frozen=True)
class Variant:
    method: str
    beta: float

    @property
    def label(self) -> str:
        return f"{self.method} (beta {self.beta:g})"


@dataclass(frozen=True)
class Budget:
    n_train: int
    n_valid: int
    n_test: int
    tuning: TuningConfig


# Sized for a 2-core CPU: QUICK finishes one task in well under 15 minutes, STANDARD three in about an hour
# (test sets of 100 examples: a standard error of about 5 points, so small differences are noise).
QUICK = Budget(n_train=96, n_valid=0, n_test=60, tuning=TuningConfig(epochs=1, lr=2e-4, batch_size=8, max_len=192))
STANDARD = Budget(n_train=160, n_valid=0, n_test=100,
                  tuning=TuningConfig(epochs=1, lr=2e-4, batch_size=8, max_len=192))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_task(base: BaseModel, profile: ImportanceProfile, task: str, alpha: float, variants: list[Variant],
             budget: Budget, workdir: Path) -> dict[str, Any]:
    data = load_mc_task(task)
    train = as_training_examples(data.train[: budget.n_train])
    valid = as_training_examples(data.validation[: budget.n_valid]) if budget.n_valid else None
    test = data.test[: budget.n_test]
    _log(f"{task}: {len(train)} train, {len(valid or [])} valid, {len(test)} test examples")

    full_zero = score_model(base.model, base.tokenizer, test)
    _log(f"{task}: full zero-shot acc {full_zero.value:.3f}")
    # Upper bound: the same adapter blocks tuned on the full model itself.
    full_copy = copy.deepcopy(base.model)
    adapter_blocks = list(range(profile.meta.config.adapter_bottom)) + list(
        range(base.num_layers - profile.meta.config.adapter_top, base.num_layers))
    started = time.perf_counter()
    full_ft = tune(full_copy, base.tokenizer, adapter_blocks, train, valid, budget.tuning)
    full_ft_seconds = time.perf_counter() - started
    full_ft_score = score_model(full_ft.model, base.tokenizer, test)  # type: ignore[arg-type]
    full_tps = full_ft.tokens_per_second
    del full_copy, full_ft
    _log(f"{task}: full fine-tuning acc {full_ft_score.value:.3f} ({full_ft_seconds:.0f} s)")

    rows: list[dict[str, Any]] = []
    for variant in variants:
        spec = EmulatorSpec(base_model=base.name, method=variant.method, alpha=alpha, beta=variant.beta,
                            adapter_bottom=profile.meta.config.adapter_bottom,
                            adapter_top=profile.meta.config.adapter_top)
        emu_dir = workdir / f"{task}-{variant.method}-{variant.beta:g}" / "emulator"
        adapter_dir = emu_dir.parent / "adapter"
        manifest = build_emulator(base, spec, profile, emu_dir)
        started = time.perf_counter()
        tuned = train_adapter(emu_dir, train, valid, budget.tuning, adapter_dir)
        tune_seconds = time.perf_counter() - started
        emulator, _, _ = load_emulator(emu_dir)
        adapter = check_adapter(adapter_dir, base, manifest)
        matrix = evaluate_adapter(base, emulator, manifest, adapter, task, test,
                                  known={"full_zero_shot": full_zero, "full_fine_tuning": full_ft_score})
        row = {"variant": variant.label, "method": variant.method, "alpha": alpha, "beta": variant.beta,
               "emulator_id": manifest.emulator_id, "matrix": matrix.model_dump(),
               "emulator_tokens_per_second": tuned.tokens_per_second, "tune_seconds": tune_seconds}
        rows.append(row)
        r = matrix.rows
        _log(f"{task} {variant.label}: emu zs {r['emulator_zero_shot'].value:.3f} emu ft "
             f"{r['emulator_fine_tuned'].value:.3f} plug-in {r['plug_in'].value:.3f} "
             f"privacy gap {matrix.privacy_gap:+.1f} utility gap {matrix.utility_gap:+.1f}")
        del emulator
    return {"task": task, "n_train": len(train), "n_test": len(test), "full_zero_shot": full_zero.model_dump(),
            "full_fine_tuning": full_ft_score.model_dump(), "full_fine_tuning_seconds": full_ft_seconds,
            "full_tokens_per_second": full_tps, "rows": rows}


def run(base: BaseModel, profile: ImportanceProfile, tasks: list[str], alpha: float, variants: list[Variant],
        budget: Budget, out_dir: Path, label: str) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:  # results are written after every task, so a long run keeps what it finished
            results.append(run_task(base, profile, task, alpha, variants, budget, Path(tmp)))
            result = _write(base, profile, results, alpha, budget, out_dir, label)
    return result


def _write(base: BaseModel, profile: ImportanceProfile, results: list[dict[str, Any]], alpha: float,
           budget: Budget, out_dir: Path, label: str) -> dict[str, Any]:
    result = {"benchmark": "paper-table", "model": base.name, "alpha": alpha, "budget": {
        "n_train": budget.n_train, "n_valid": budget.n_valid, "n_test": budget.n_test,
        "tuning": budget.tuning.model_dump()}, "profile_id": profile.meta.profile_id,
        "host": {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "tasks": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"paper-table-{label}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"{stem}.md").write_text(markdown(result))
    chart(result, out_dir / f"{stem}.png")
    return result


def _pct(score: dict[str, Any] | Score) -> str:
    s = score.model_dump() if isinstance(score, Score) else score
    return f"{100 * s['value']:.1f} ± {100 * (s['stderr'] or 0):.1f}"


def markdown(result: dict[str, Any]) -> str:
    b = result["budget"]
    lines = [f"# Offsite-tuning matrix on {result['model']} (alpha {result['alpha']})", "",
             f"Budget: {b['n_train']} train / {b['n_valid']} valid / {b['n_test']} test examples per task, "
             f"{b['tuning']['epochs']} epoch(s), lr {b['tuning']['lr']}, batch {b['tuning']['batch_size']}; "
             "accuracy (%) ± standard error; gaps in points.", "",
             "| task | method | full zero-shot | emulator zero-shot | emulator fine-tuned | plug-in | "
             "full fine-tuning | privacy gap | utility gap | tuning tok/s (emulator / full) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in result["tasks"]:
        for row in t["rows"]:
            m = row["matrix"]
            r = m["rows"]
            lines.append(
                f"| {t['task']} | {row['variant']} | {_pct(r['full_zero_shot'])} | {_pct(r['emulator_zero_shot'])} | "
                f"{_pct(r['emulator_fine_tuned'])} | {_pct(r['plug_in'])} | {_pct(r['full_fine_tuning'])} | "
                f"{m['privacy_gap']:+.1f} | {m['utility_gap']:+.1f} | "
                f"{row['emulator_tokens_per_second']:.0f} / {t['full_tokens_per_second']:.0f} |")
    lines.append("")
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {"uniform": "s", "scaleot": "o"}
    for t in result["tasks"]:
        for row in t["rows"]:
            m = row["matrix"]
            ax.scatter(m["privacy_gap"], 100 * m["rows"]["plug_in"]["value"], marker=markers.get(row["method"], "x"),
                       label=f"{t['task']}: {row['variant']}")
        ax.axhline(100 * t["full_fine_tuning"]["value"], linestyle=":", linewidth=0.8, color="grey")
    ax.set_xlabel("privacy gap (plug-in - emulator fine-tuned, points)")
    ax.set_ylabel("plug-in accuracy (%)")
    ax.set_title(f"{result['model']}, alpha {result['alpha']} (dotted: full fine-tuning)")
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
