"""Markdown and PNG of a frontier result (`frontier.frontier_result`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.reports.gap_chart import gap_chart
from benchmarks.reports.paper_report import format_ci, format_num

RULE = (
    "Rule (`scaleot-server emulators recommend --privacy-gap G`): among the ScaleOT points whose mean "
    "privacy gap reaches G and whose 95% CI lies above 0, ship the one with the smallest mean utility gap "
    "(ties: larger privacy gap, then larger alpha, then smaller beta). If none reaches G, no measured "
    "(alpha, beta) gives that privacy: lower G or measure larger alpha / beta.")


def markdown(result: dict[str, Any]) -> str:
    b = result["budget"]
    lines = [f"# Privacy-utility frontier on {result['model']}", "",
             f"Profile {result['profile_id']}; tasks {', '.join(result['tasks'])}; {b['n_train']} train examples, "
             f"seeds {b['seeds']}, test = {'whole test split' if b['n_test'] is None else b['n_test']}; "
             "gaps in points (mean over tasks) with paired 95% bootstrap CIs; * = CI excludes 0; "
             "P = on the ScaleOT Pareto front.", "",
             "| method | alpha | beta | privacy gap | utility gap | plug-in | emulator fine-tuned | "
             "plug-in vs uniform | emulator ppl | agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
    front = set(result["pareto_scaleot"])
    for p in result["points"]:
        mark = " P" if p["variant"] in front else ""
        cells = [f"{p['method']}{mark}", f"{p['alpha']:g}", f"{p['beta']:g}", format_ci(p["privacy_gap"]),
                 format_ci(p["utility_gap"]), f"{p['plug_in']['mean']:.1f}", f"{p['emulator_fine_tuned']['mean']:.1f}",
                 format_ci(p["plug_in_vs_uniform"]), format_num(p["emulator_ppl"]), _share(p.get("agreement"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Recommendation", "", RULE, "",
              "| wanted privacy gap | alpha | beta | privacy gap | utility gap |", "|---|---|---|---|---|"]
    for r in result["recommendations"]:
        if r["alpha"] is None:
            lines.append(f"| {r['target_privacy_gap']:g} | - | - | none reaches it | - |")
        else:
            lines.append(f"| {r['target_privacy_gap']:g} | {r['alpha']:g} | {r['beta']:g} | "
                         f"{format_ci(r['privacy_gap'])} | {format_ci(r['utility_gap'])} |")
    return "\n".join([*lines, ""])


def chart(result: dict[str, Any], path: Path) -> None:
    """Privacy gap (x) vs utility gap (y): ScaleOT lines per alpha through beta, uniform squares, front."""
    from matplotlib import rcParams

    with gap_chart(path, f"{result['model']} frontier on {', '.join(result['tasks'])}") as ax:
        colours = rcParams["axes.prop_cycle"].by_key()["color"]
        alphas = sorted({p["alpha"] for p in result["points"]})
        for i, alpha in enumerate(alphas):
            colour = colours[i % len(colours)]
            line = sorted((p for p in result["points"] if p["method"] == "scaleot" and p["alpha"] == alpha),
                          key=lambda p: p["beta"])
            xs = [p["privacy_gap"]["mean"] for p in line]
            ys = [p["utility_gap"]["mean"] for p in line]
            ax.plot(xs, ys, "-o", color=colour, label=f"scaleot alpha {alpha:g} (beta rising)")
            for p, x, y in zip(line, xs, ys, strict=True):
                ax.errorbar(x, y, xerr=[[x - p["privacy_gap"]["ci95"][0]], [p["privacy_gap"]["ci95"][1] - x]],
                            yerr=[[y - p["utility_gap"]["ci95"][0]], [p["utility_gap"]["ci95"][1] - y]],
                            color=colour, alpha=0.3, capsize=2)
                ax.annotate(f"b{p['beta']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            for p in result["points"]:
                if p["method"] == "uniform" and p["alpha"] == alpha:
                    ax.scatter(p["privacy_gap"]["mean"], p["utility_gap"]["mean"], marker="s", color=colour,
                               edgecolors="black", label=f"uniform alpha {alpha:g}")
        front = [p for p in result["points"] if p["variant"] in set(result["pareto_scaleot"])]
        front.sort(key=lambda p: p["privacy_gap"]["mean"])
        ax.plot([p["privacy_gap"]["mean"] for p in front], [p["utility_gap"]["mean"] for p in front], ":k",
                linewidth=1, label="ScaleOT Pareto front")


def _share(value: float | None) -> str:
    """Emulator-full agreement as a percentage ('-' for results measured before it was recorded)."""
    return "-" if value is None else f"{100 * value:.0f}%"
