"""Two transfer-split results of the same task, test items and seeds (e.g. with and without task calibration),
row by row: each row's accuracy in both, and the paired difference over test items and the shared seeds
(`scaleot-bench compare-runs`). The runs must have scored the same test items; only seeds both ran count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from benchmarks.output import write_result
from benchmarks.reports.stats import Interval, as_matrix, bootstrap_mean, paired_difference


class RowComparison(BaseModel):
    row: str
    a: float  # mean accuracy, %, over the shared seeds
    b: float
    a_minus_b: Interval  # points, paired over test items and seeds


class RunComparison(BaseModel):
    benchmark: str = "compare-runs"
    a: str
    b: str
    task: str
    n_test: int
    seeds: list[int]
    agreement: dict[str, float | None]  # emulator-full agreement of each run (None when not recorded)
    rows: list[RowComparison]


def compare(path_a: Path, path_b: Path) -> RunComparison:
    a, b = json.loads(path_a.read_text()), json.loads(path_b.read_text())
    if a.get("benchmark") != "transfer-split" or b.get("benchmark") != "transfer-split":
        raise ValueError("compare-runs compares two transfer-split results")
    if a["task"] != b["task"] or a["n_test"] != b["n_test"]:
        raise ValueError(f"different tasks or test splits: {a['task']}/{a['n_test']} vs {b['task']}/{b['n_test']}")
    seeds = [s for s in a["seeds"] if s in b["seeds"]]
    if not seeds:
        raise ValueError("the two runs share no tuning seed")

    def cells(result: dict[str, Any], row: str) -> list[str]:
        by_seed = dict(zip(result["seeds"], result["rows"][row]["correct"], strict=False))
        if len(result["rows"][row]["correct"]) == 1:  # a seed-independent row (zero-shot)
            return [result["rows"][row]["correct"][0]]
        return [by_seed[s] for s in seeds]

    rows = []
    for row in [r for r in a["rows"] if r in b["rows"]]:
        ma, mb = as_matrix(cells(a, row)), as_matrix(cells(b, row))
        rows.append(RowComparison(row=row, a=100 * float(ma.mean()), b=100 * float(mb.mean()),
                                  a_minus_b=bootstrap_mean([paired_difference(ma, mb)])))
    agreement = {"a": (a.get("agreement") or {}).get("agreement"), "b": (b.get("agreement") or {}).get("agreement")}
    return RunComparison(a=str(path_a), b=str(path_b), task=a["task"], n_test=a["n_test"], seeds=seeds,
                         agreement=agreement, rows=rows)


def markdown(result: RunComparison) -> str:
    share = {k: "-" if v is None else f"{100 * v:.1f}%" for k, v in result.agreement.items()}
    lines = [f"# {result.task}: A = `{result.a}`", f"# against B = `{result.b}`", "",
             f"{result.n_test} test items, seeds {result.seeds}; A - B paired over items and seeds (95% bootstrap), "
             f"points. Emulator-full agreement: A {share['a']}, B {share['b']}.", "",
             "| row | A | B | A - B |", "|---|---|---|---|"]
    for r in result.rows:
        d = r.a_minus_b
        lines.append(f"| {r.row} | {r.a:.1f} | {r.b:.1f} | {d.mean:+.1f} [{d.ci95[0]:+.1f}, {d.ci95[1]:+.1f}] |")
    return "\n".join(lines) + "\n"


def run(path_a: Path, path_b: Path, out_dir: Path, label: str) -> RunComparison:
    result = compare(path_a, path_b)
    write_result(out_dir, f"compare-{label}", result.model_dump(mode="json"), markdown(result))
    return result
