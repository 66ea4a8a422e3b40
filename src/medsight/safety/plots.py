"""Reliability diagrams (before/after calibration) written as PNG, for reports and the demo."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from medsight.files import atomic_write_with


def reliability_diagram(path: str | Path, curves: Mapping[str, Mapping[str, list[float]]], title: str = "") -> Path:
    """Plot observed frequency against mean predicted confidence per bin for each named curve.

    ``curves`` maps a legend name to a ``reliability_curve`` dict (bin_mean_pred, bin_frac_pos, bin_count); marker
    area follows the bin's case count so that sparsely filled bins do not look as certain as full ones.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=150)  # 630 px: display size
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    for name, c in curves.items():
        total = max(sum(c["bin_count"]), 1)
        ax.plot(c["bin_mean_pred"], c["bin_frac_pos"], marker="o", lw=1.2, ms=3, label=name)
        ax.scatter(c["bin_mean_pred"], c["bin_frac_pos"], s=[400 * n / total for n in c["bin_count"]], alpha=0.25)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability (bin)", ylabel="observed frequency (bin)", title=title)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    plt.close(fig)
    return path
