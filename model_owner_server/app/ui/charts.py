"""Geometry of the dashboard's pictures (inline SVG drawn by the templates, so every label is escaped there):
an emulator's layer map, a privacy-utility frontier, evaluations of one task side by side. Pure: numbers in,
numbers out."""

from __future__ import annotations

from dataclasses import dataclass

from model_owner_server.recommendation.frontier_file import FrontierFile, FrontierPoint
from shared.api import EvaluationOut
from shared.job_outcomes import MATRIX_ROWS
from shared.manifest import EmulatorManifest, LayerKind

DROPPED = "dropped"
KIND_LABEL = {LayerKind.adapter.value: "adapter (tuned by the data owner)",
              LayerKind.kept.value: "kept (original, frozen)",
              LayerKind.kept_src.value: "kept, rank-compressed (SRC)",
              LayerKind.harmonizer.value: "replaced by a harmonizer",
              DROPPED: "dropped"}


@dataclass(frozen=True)
class LayerCell:
    full_index: int
    emulator_index: int | None
    kind: str  # a LayerKind value or "dropped"
    css: str  # the class that colours it
    x: float
    width: float
    title: str


@dataclass(frozen=True)
class LayerMap:
    cells: list[LayerCell]
    width: float
    height: float
    counts: dict[str, int]


def layer_map(manifest: EmulatorManifest, width: float = 900.0) -> LayerMap:
    """One cell per block of the full model, coloured by what became of it in the emulator."""
    by_full = {entry.full_index: entry for entry in manifest.layers}
    n = max(manifest.num_full_layers, max(by_full, default=-1) + 1, 1)
    cell = width / n
    cells = []
    counts: dict[str, int] = {}
    for index in range(n):
        entry = by_full.get(index)
        kind = entry.kind.value if entry else DROPPED
        counts[kind] = counts.get(kind, 0) + 1
        title = f"block {index}: {KIND_LABEL.get(kind, kind)}"
        if entry is not None:
            title += f"; emulator block {entry.emulator_index}"
            if entry.src_ranks:
                title += "; ranks " + ", ".join(f"{k}={v}" for k, v in sorted(entry.src_ranks.items()))
        cells.append(LayerCell(index, entry.emulator_index if entry else None, kind,
                               "k-" + kind.replace("+", "-"), index * cell, max(cell - 1.0, 1.0), title))
    return LayerMap(cells, width, 46.0, counts)


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class FrontierDot:
    x: float
    y: float
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    title: str
    recommended: bool
    method: str


@dataclass(frozen=True)
class FrontierChart:
    dots: list[FrontierDot]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: float
    height: float
    left: float
    top: float
    right: float
    bottom: float


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    step = (hi - lo) / (count - 1)
    return [lo + i * step for i in range(count)]


def frontier_chart(frontier: FrontierFile, recommended: FrontierPoint | None = None) -> FrontierChart | None:
    """Privacy gap (x) against utility gap (y), each with its 95% interval; None when nothing was measured."""
    points = [p for p in frontier.points if p.privacy_gap is not None and p.utility_gap is not None]
    if not points:
        return None
    width, height, left, top, right, bottom = 640.0, 360.0, 56.0, 16.0, 624.0, 312.0
    xs = [v for p in points if p.privacy_gap for v in (*p.privacy_gap.ci95, p.privacy_gap.mean)]
    ys = [v for p in points if p.utility_gap for v in (*p.utility_gap.ci95, p.utility_gap.mean)]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    pad_x, pad_y = max((x_hi - x_lo) * 0.05, 0.5), max((y_hi - y_lo) * 0.05, 0.5)
    x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    dots = []
    for p in points:
        assert p.privacy_gap is not None and p.utility_gap is not None
        title = (f"{p.method} alpha {p.alpha:g} beta {p.beta:g}: privacy gap {p.privacy_gap.mean:+.1f} "
                 f"[{p.privacy_gap.ci95[0]:+.1f}, {p.privacy_gap.ci95[1]:+.1f}], utility gap "
                 f"{p.utility_gap.mean:+.1f} [{p.utility_gap.ci95[0]:+.1f}, {p.utility_gap.ci95[1]:+.1f}]")
        dots.append(FrontierDot(sx(p.privacy_gap.mean), sy(p.utility_gap.mean), sx(p.privacy_gap.ci95[0]),
                                sx(p.privacy_gap.ci95[1]), sy(p.utility_gap.ci95[0]), sy(p.utility_gap.ci95[1]),
                                title, p is recommended, "m-" + ("scaleot" if p.method == "scaleot" else "other")))
    return FrontierChart(dots, [Tick(sx(v), f"{v:+.1f}") for v in _ticks(x_lo, x_hi)],
                         [Tick(sy(v), f"{v:+.1f}") for v in _ticks(y_lo, y_hi)], width, height, left, top, right,
                         bottom)


COMPARED_ROWS = ("full_zero_shot", "emulator_zero_shot", "emulator_fine_tuned", "plug_in")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Group:
    x: float
    label: str


@dataclass(frozen=True)
class ComparisonChart:
    bars: list[Bar]
    groups: list[Group]
    y_ticks: list[Tick]
    legend: list[tuple[str, str]]  # (css class, label)
    width: float
    height: float
    left: float
    bottom: float
    metric: str


def comparison_chart(evaluations: list[EvaluationOut]) -> ComparisonChart | None:
    """Grouped bars: per evaluation of one task, the matrix rows it measured (accuracy in %, or perplexity)."""
    done = [e for e in evaluations if e.result is not None][:12]
    if not done:
        return None
    assert done[0].result is not None
    metric = done[0].result.metric
    done = [e for e in done if e.result is not None and e.result.metric == metric]
    scale = 100.0 if metric == "acc" else 1.0
    values = [r.value * scale for e in done if e.result for k, r in e.result.rows.items() if k in COMPARED_ROWS]
    top_value = max(values, default=1.0) or 1.0
    left, bottom, top, group_w = 48.0, 220.0, 12.0, 120.0
    bar_w = (group_w - 24) / len(COMPARED_ROWS)
    bars, groups = [], []
    for g, evaluation in enumerate(done):
        assert evaluation.result is not None
        x0 = left + 12 + g * group_w
        groups.append(Group(x0 + (group_w - 24) / 2, evaluation.id))
        for b, row in enumerate(COMPARED_ROWS):
            score = evaluation.result.rows.get(row)
            if score is None:
                continue
            h = score.value * scale / top_value * (bottom - top)
            shown = f"{score.value * scale:.1f}%" if metric == "acc" else f"{score.value:.2f}"
            bars.append(Bar(x0 + b * bar_w, bottom - h, bar_w - 2, h, f"r-{b}",
                            f"{evaluation.id} {MATRIX_ROWS[row]}: {shown} (n={score.n})"))
    ticks = [Tick(bottom - v / top_value * (bottom - top), f"{v:.0f}" if metric == "acc" else f"{v:.1f}")
             for v in _ticks(0.0, top_value)]
    legend = [(f"r-{b}", MATRIX_ROWS[row]) for b, row in enumerate(COMPARED_ROWS)]
    return ComparisonChart(bars, groups, ticks, legend, left + 24 + len(done) * group_w, bottom + 40, left, bottom,
                           metric)
