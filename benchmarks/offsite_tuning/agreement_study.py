"""Benchmark: does emulator-full agreement predict the utility gap? (`scaleot-bench agreement`)

For every (task, emulator variant) whose utility gap a committed paper-table or frontier result holds,
the emulator is rebuilt from the same stage-1 profile and both it and the full model answer the task's
test prompts zero-shot (labels unused): agreement = share of the same answer, KL = mean KL(full ||
emulator) over the choices (`evaluation/agreement.py`). Then, across all points, Spearman's rank
correlation of each fidelity metric with the utility gap, with a bootstrap interval over points, and
the agreement threshold that best separates emulators that transfer (utility gap <= `transfers_below`
points) from those that do not: the threshold the service's agreement check answers with.

Points from the same task share its test items, so the interval over points is optimistic; the
result says which files and points it used. Resumable: finished points are kept in a state file.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from benchmarks.offsite_tuning.task_run import Variant, variant_emulator, variant_spec
from benchmarks.output import log, write_result
from benchmarks.reports.stats import Interval, spearman_interval
from model_owner_server.base_models import LoadedBase
from model_owner_server.emulators.profile import ImportanceProfile
from model_owner_server.evaluation.agreement import choice_loglikelihoods, compare_answers
from shared.artifacts import load_emulator
from shared.data_formats import Prompt, unlabelled
from shared.precision import dtype_name, model_dtype
from shared.tasks import load_mc_task

SOURCES = (
    "results/paper-table-smollm2-135m-standard.json",
    "results/frontier-raw-smollm2-135m.json",
    "results/frontier-raw-smollm2-135m-goal_step_wikihow_goal.json",
    "results/frontier-raw-smollm2-135m-goal_step_wikihow_step.json",
)
TRANSFERS_BELOW = 5.0  # points of utility gap: an adapter within this of full-model tuning "transfers"


class StudyPoint(BaseModel):
    source: str
    task: str
    variant: str
    method: str
    alpha: float
    beta: float
    utility_gap: Interval
    privacy_gap: Interval
    emulator_ppl: float | None
    n_items: int
    agreement: float
    mean_kl: float


class Threshold(BaseModel):
    agreement: float  # verdict "likely to transfer" at agreement >= this
    transfers_below: float
    balanced_accuracy: float  # of the rule on the measured points (chosen on them: in-sample)
    n_transfer: int
    n_fail: int


class AgreementStudy(BaseModel):
    benchmark: str = "agreement"
    model: str
    model_note: str
    profile_id: str
    dtype: str
    n_test: int | None
    distilled: bool  # whether the OT-KD rows were measured
    sources: list[str]
    points: list[StudyPoint]
    correlations: dict[str, Interval]  # metric -> Spearman rho with the utility gap
    threshold: Threshold
    seconds: float
    host: dict[str, Any]


def study_points(sources: list[Path], distilled: bool = True) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(source, task, variant summary, task interval) for every measured (task, variant) of the files; without
    `distilled`, the OT-KD rows are left out (their emulator takes over an hour to distil on 2 cores)."""
    out = []
    for path in sources:
        data = json.loads(path.read_text())
        by_label = {row["variant"]: row for row in data["summary"]}
        for task, variants in data["task_intervals"].items():
            for label, intervals in variants.items():
                if "utility_gap" in intervals and label in by_label and (distilled or
                                                                          by_label[label]["method"] != "ot-kd"):
                    out.append((str(path), task, by_label[label], intervals))
    return out


def best_threshold(points: list[StudyPoint], transfers_below: float) -> Threshold:
    """The agreement cut that best separates transferring points (utility gap < transfers_below) from the rest,
    by balanced accuracy; ties go to the lower cut (the fewer false alarms for a data owner)."""
    good = [p.agreement for p in points if p.utility_gap.mean <= transfers_below]
    bad = [p.agreement for p in points if p.utility_gap.mean > transfers_below]
    best: tuple[float, float] = (-1.0, 0.0)
    for cut in sorted({p.agreement for p in points}):
        tpr = sum(a >= cut for a in good) / len(good) if good else 1.0
        tnr = sum(a < cut for a in bad) / len(bad) if bad else 1.0
        if (tpr + tnr) / 2 > best[0]:
            best = ((tpr + tnr) / 2, cut)
    return Threshold(agreement=best[1], transfers_below=transfers_below, balanced_accuracy=best[0],
                     n_transfer=len(good), n_fail=len(bad))


def run(base: LoadedBase, profile: ImportanceProfile, sources: list[Path], out_dir: Path, label: str,
        n_test: int | None = None, transfers_below: float = TRANSFERS_BELOW, distilled: bool = False) -> AgreementStudy:
    started = time.perf_counter()
    state_path = out_dir / f".agreement-{label}.state.json"
    done: dict[str, dict[str, Any]] = json.loads(state_path.read_text()) if state_path.exists() else {}
    full_lls: dict[str, list[list[float]]] = {}
    points: list[StudyPoint] = []
    todo = study_points(sources, distilled)
    for path in sources:
        recorded = json.loads(path.read_text()).get("profile_id")
        if recorded != profile.meta.profile_id:
            log(f"note: {path} was measured with profile {recorded}, this run uses {profile.meta.profile_id}")
    prompts_of: dict[str, list[Prompt]] = {}

    def prompts_for(task: str) -> list[Prompt]:
        if task not in prompts_of:
            test = load_mc_task(task).test
            test = test if n_test is None else test[:n_test]
            prompts_of[task] = unlabelled(test)
        return prompts_of[task]

    # an emulator depends on the variant, not the task: build each once and score every task it was measured on
    by_variant: dict[tuple[str, float, float], list[tuple[str, str, dict[str, Any], dict[str, Any]]]] = {}
    for item in todo:
        summary = item[2]
        by_variant.setdefault((summary["method"], summary["alpha"], summary["beta"]), []).append(item)
    with tempfile.TemporaryDirectory(prefix="agreement-") as tmp:
        for n, ((method, alpha, beta), items) in enumerate(by_variant.items()):
            missing = [i for i in items if f"{i[0]}|{i[1]}|{i[2]['variant']}" not in done]
            if not missing:
                continue
            variant = Variant(method, beta, alpha)
            emu_dir, _ = variant_emulator(base, variant_spec(base, profile, variant), profile, Path(tmp) / f"v{n}", log)
            emulator, _, _ = load_emulator(emu_dir)
            for source, task, summary, intervals in missing:
                prompts = prompts_for(task)
                if task not in full_lls:
                    log(f"{task}: full model zero-shot on {len(prompts)} test prompts")
                    full_lls[task] = choice_loglikelihoods(base.model, base.tokenizer, prompts)
                report = compare_answers(full_lls[task], choice_loglikelihoods(emulator, base.tokenizer, prompts))
                done[f"{source}|{task}|{summary['variant']}"] = {"n_items": report.n_items,
                                                                 "agreement": report.agreement,
                                                                 "mean_kl": report.mean_kl}
                out_dir.mkdir(parents=True, exist_ok=True)
                state_path.write_text(json.dumps(done))
                log(f"{task} {summary['variant']}: agreement {report.agreement:.3f}, KL {report.mean_kl:.3f}, "
                    f"utility gap {intervals['utility_gap']['mean']:+.1f}")
            del emulator
    for source, task, summary, intervals in todo:
        measured = done[f"{source}|{task}|{summary['variant']}"]
        points.append(StudyPoint(
            source=source, task=task, variant=summary["variant"], method=summary["method"], alpha=summary["alpha"],
            beta=summary["beta"], utility_gap=Interval(**intervals["utility_gap"]),
            privacy_gap=Interval(**intervals["privacy_gap"]), emulator_ppl=summary.get("emulator_ppl"), **measured))
    gaps = [p.utility_gap.mean for p in points]
    correlations = {"agreement": spearman_interval([p.agreement for p in points], gaps),
                    "mean_kl": spearman_interval([p.mean_kl for p in points], gaps)}
    with_ppl = [p for p in points if p.emulator_ppl is not None]
    if len(with_ppl) >= 3:
        correlations["emulator_ppl"] = spearman_interval([p.emulator_ppl or 0.0 for p in with_ppl],
                                                         [p.utility_gap.mean for p in with_ppl])
    study = AgreementStudy(
        model=base.name, model_note="SmolLM2-135M-Instruct dequantised from a Q4_1 GGUF file",
        profile_id=profile.meta.profile_id, dtype=dtype_name(model_dtype(base.model)), n_test=n_test,
        distilled=distilled,
        sources=[str(s) for s in sources], points=points, correlations=correlations,
        threshold=best_threshold(points, transfers_below), seconds=round(time.perf_counter() - started, 1),
        host={"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__})
    write_result(out_dir, f"agreement-{label}", study.model_dump(mode="json"), markdown(study))
    return study


def markdown(study: AgreementStudy) -> str:
    t = study.threshold
    lines = [f"# Emulator-full agreement against the utility gap ({study.model})", "",
             f"{study.model_note}; profile `{study.profile_id}`, {study.dtype}. Agreement and KL on the test prompts "
             f"({'all' if study.n_test is None else f'the first {study.n_test}'} of each task; labels unused); "
             "utility gaps from the committed results: " + ", ".join(f"`{s}`" for s in study.sources)
             + ("." if study.distilled else " (OT-KD rows left out: `--distilled` measures them)."), "",
             "Spearman's rho with the utility gap across all points (95% bootstrap over points; points of one task "
             "share its test items, so the interval is optimistic):", "",
             "| metric | rho | 95% CI | points |", "|---|---|---|---|"]
    for metric, interval in study.correlations.items():
        count = len(study.points) if metric != "emulator_ppl" else sum(p.emulator_ppl is not None for p in study.points)
        lines.append(f"| {metric} | {interval.mean:+.2f} | [{interval.ci95[0]:+.2f}, {interval.ci95[1]:+.2f}] | "
                     f"{count} |")
    lines += ["", f"Verdict rule: agreement >= **{100 * t.agreement:.0f}%** -> likely to transfer (utility gap <= "
              f"{t.transfers_below:g} points). Balanced accuracy on these points {100 * t.balanced_accuracy:.0f}% "
              f"({t.n_transfer} that transfer, {t.n_fail} that do not), chosen on the same points (in-sample).", "",
              "| task | variant | agreement | KL | utility gap | privacy gap | source |",
              "|---|---|---|---|---|---|---|"]
    for p in sorted(study.points, key=lambda p: (p.task, p.agreement)):
        lines.append(f"| {p.task} | {p.variant} | {100 * p.agreement:.1f}% | {p.mean_kl:.3f} | "
                     f"{p.utility_gap.mean:+.1f} [{p.utility_gap.ci95[0]:+.1f}, {p.utility_gap.ci95[1]:+.1f}] | "
                     f"{p.privacy_gap.mean:+.1f} | {Path(p.source).name} |")
    return "\n".join(lines) + "\n"
