"""The privacy-utility chart of the benchmark reports (paper-table and frontier): privacy gap on x, utility
gap on y, on the same axes so that the two charts read alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@contextmanager
def gap_chart(path: Path, title: str) -> Iterator[Axes]:
    """Axes for the caller's points; on exit the zero lines, axis titles and legend are added and the PNG
    is written to `path`."""
    import matplotlib  # imported here: slow, and only the chart needs it

    matplotlib.use("Agg")  # the benchmarks run without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        yield ax
        ax.axvline(0, color="grey", linewidth=0.6)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xlabel("privacy gap (plug-in - emulator fine-tuned, points; right = more private)")
        # two lines: on one, the label is longer than the axis and tight_layout cuts both ends
        ax.set_ylabel("utility gap, points (down = better)\nadapter-only on full model - plug-in")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
