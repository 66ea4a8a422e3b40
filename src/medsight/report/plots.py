"""Report figures as base64 PNG strings, drawn from the results document so plots and numbers cannot drift.

Each function takes the relevant part of the results JSON and returns a ``data:image/png;base64,...`` URI
(the HTML stays one self-contained file) or None when there is nothing to draw.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100


def _uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label(c: dict[str, Any]) -> str:
    return f"{c['name']} ({c['kind']}, n={c['n']})"


def roc_pr(cohorts: list[dict[str, Any]]) -> str | None:
    """ROC and precision-recall curves, one line per cohort, AUC in the legend."""
    drawn = [c for c in cohorts if c.get("roc")]
    if not drawn:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.4))
    for c in drawn:
        auc = c["auc"]["value"]
        a.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=f"{_label(c)} AUC {auc:.3f}", drawstyle="steps-post")
        b.plot(c["pr"]["recall"], c["pr"]["precision"], label=f"{_label(c)}", drawstyle="steps-post")
    a.plot([0, 1], [0, 1], ls=":", c="grey")
    a.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    b.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall", xlim=(0, 1),
          ylim=(0, 1.02))
    a.legend(fontsize=8, loc="lower right")
    b.legend(fontsize=8, loc="lower left")
    return _uri(fig)


def reliability(cohorts: list[dict[str, Any]]) -> str | None:
    """Reliability diagrams before and after calibration, one panel each."""
    if not cohorts:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    for ax, key, title in ((axes[0], "reliability_before", "before calibration"),
                           (axes[1], "reliability_after", "after calibration")):
        drawn = [c for c in cohorts if c.get(key)]
        if not drawn:
            title = f"{title}: no uncalibrated probabilities given"
        for c in drawn:
            r = c[key]
            x = np.array([np.nan if v is None else v for v in r.get("bin_mean_pred", [])], dtype=float)
            y = np.array([np.nan if v is None else v for v in r.get("bin_frac_pos", [])], dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            ece = c[key.replace("reliability", "ece")]["value"]
            ax.plot(x[ok], y[ok], marker="o", label=f"{c['name']} ECE {ece:.3f}" if ece is not None else c["name"])
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set(xlabel="mean predicted probability", title=f"Reliability {title}", xlim=(0, 1), ylim=(0, 1))
        if drawn:
            ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("observed fraction positive")
    return _uri(fig)


def decision_curves(cohorts: list[dict[str, Any]]) -> str | None:
    """Net benefit of the model vs. treat-all and treat-none across threshold probabilities."""
    drawn = [c for c in cohorts if c.get("decision")]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    top = 0.0
    for c in drawn:
        d = c["decision"]
        line, = ax.plot(d["threshold"], d["model"], label=f"model, {c['name']}")
        ax.plot(d["threshold"], d["treat_all"], ls="--", c=line.get_color(), alpha=0.6,
                label=f"treat all, {c['name']}")
        top = max(top, max(v for v in d["model"] + d["treat_all"] if v is not None))
    ax.axhline(0, c="k", lw=1, label="treat none")
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curves",
           ylim=(-0.05, max(0.05, top * 1.1)))
    ax.legend(fontsize=8)
    return _uri(fig)


def forest(rows: list[dict[str, Any]], metric: str, title: str) -> str | None:
    """Forest plot: one row per cohort/subgroup, point and CI; too-small groups listed but not plotted."""
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.3))
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows):
        m = r["metric"]
        if r.get("too_few") or m["value"] is None:
            ax.text(0.5, y, "too few cases", va="center", ha="center", fontsize=8, color="grey",
                    transform=ax.get_yaxis_transform())
            continue
        colour = "firebrick" if r.get("worst") else "navy"
        if m["lo"] is not None and m["hi"] is not None:
            ax.plot([m["lo"], m["hi"]], [y, y], c=colour, lw=2)
        ax.plot(m["value"], y, "s", c=colour, ms=6)
    ax.set_yticks(ys, [f"{r['label']} (n={r['n']})" for r in rows], fontsize=9)
    ax.set(xlabel=metric, ylim=(-0.7, len(rows) - 0.3))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _uri(fig)


def dice_distribution(cohorts: list[dict[str, Any]]) -> str | None:
    """Box plots with the individual cases of per-case Dice, per label and cohort."""
    data, names = [], []
    for c in cohorts:
        for lab, vals in c.get("dice_values", {}).items():
            if vals:
                data.append(vals)
                names.append(f"{lab}\n{c['name']}")
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(data)), 4.4))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    rng = np.random.default_rng(0)
    for i, vals in enumerate(data, start=1):
        ax.plot(i + rng.uniform(-0.12, 0.12, len(vals)), vals, ".", c="navy", alpha=0.6)
    ax.set(ylabel="Dice", title="Per-case Dice by label and cohort")
    ax.grid(axis="y", alpha=0.3)
    return _uri(fig)


def overlay(image: np.ndarray, reference: np.ndarray | None, prediction: np.ndarray | None,
            heat: np.ndarray | None = None) -> str:
    """Thumbnail of one 2D slice: image in grey, reference outline green, prediction outline red, heat map."""
    from skimage.segmentation import find_boundaries

    img = np.asarray(image, dtype=float).T  # [i, j] -> rows j for display
    lo, hi = np.percentile(img, [1, 99])
    rgb = np.repeat(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, axis=2)
    if heat is not None:
        h = np.asarray(heat, dtype=float).T
        h = (h - h.min()) / max(np.ptp(h), 1e-6)
        rgb = 0.6 * rgb + 0.4 * plt.get_cmap("inferno")(h)[..., :3]
    for mask, colour in ((reference, (0.1, 0.9, 0.1)), (prediction, (0.95, 0.1, 0.1))):
        if mask is not None:
            edge = find_boundaries(np.asarray(mask).T, mode="inner")
            rgb[edge] = colour
    fig, ax = plt.subplots(figsize=(1.8, 1.8 * rgb.shape[0] / max(rgb.shape[1], 1)))
    ax.imshow(rgb, origin="lower")
    ax.axis("off")
    return _uri(fig)


def federated_rounds(fed: dict[str, Any]) -> str | None:
    """Held-out AUC (Dice for segmentation) and ECE of the global model at each site, per round (dashed:
    case-weighted over sites)."""
    rows = fed.get("rows") or []
    if not rows:
        return None
    first = (fed.get("metrics") or ["auc"])[0]
    names = fed.get("metric_names") or {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
    for ax, key, name in ((axes[0], first, names.get(first, first.upper())), (axes[1], "ece", "ECE")):
        for site in fed.get("sites", []):
            pts = [(r["round"], r[key]) for r in rows if r["site"] == site and r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"site {site}")
        g = [(r["round"], r[key]) for r in fed.get("global", []) if r[key] is not None]
        if g:
            ax.plot(*zip(*g), ls="--", c="k", label="all sites (case-weighted)")
        ax.set(xlabel="round", ylabel=name, title=f"Held-out {name} per site and round")
        if len(fed.get("global", [])) <= 15:
            ax.set_xticks(sorted({r["round"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _uri(fig)
