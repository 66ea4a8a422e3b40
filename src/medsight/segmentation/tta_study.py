"""What ``predict`` runs by default, chosen by measured Dice and counted cost: sliding-window overlap x mirror axes.

Mirroring along one axis doubles the network passes; a lower window overlap can pay for it (the demo plan's
[79, 97, 81] volumes need 64 windows of [32, 48, 40] at overlap 0.5 but 27 at 0.25 or 0). So the study that runs
after a fold is trained predicts its validation cases with every flip combination of the plan's mirror axes at
each overlap of ``OVERLAPS`` (each flip's softmax once per overlap and case; every candidate is an average of
them, no extra network run), and records the hard Dice of every (overlap, axis subset) and its cost. Cost is
counted, not timed: network window passes (windows at that overlap, from the case shapes as MONAI's sliding
window lays them, times flip combinations), in units of one un-mirrored pass at overlap 0.5. ``choose`` takes the
cheapest candidate (overlap x prefix of the axes ordered by their measured single-axis gain) whose Dice is within
``DICE_TOLERANCE`` of the reference, full mirroring at overlap 0.5 (the old default), in every foreground class;
ties go to the higher mean Dice. The choice and the candidate table travel in the package (``inference.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medsight.segmentation.tta import combine_studies, mirror_combinations

OVERLAPS = (0.5, 0.25, 0.0)  # sliding-window overlaps the study tries (0.5: predict's old and reference default)
REFERENCE_OVERLAP = 0.5
DICE_TOLERANCE = 0.005  # issue 30's "equal Dice": a candidate may lose at most this much Dice (per class) to the ref
COST_UNIT = "network window passes / those of one un-mirrored pass at overlap 0.5 (summed over the study cases)"


def window_starts(shape: Sequence[int], patch: Sequence[int], overlap: float) -> list[list[int]]:
    """Per spatial axis, where MONAI's ``sliding_window_inference`` starts its windows on an image of ``shape``
    (it pads a side smaller than the patch to the patch; the interval is int(patch x (1 - overlap)), at least 1;
    the last window is moved back inside the image)."""
    out = []
    for size, p in zip(shape, patch):
        size, p = max(int(size), int(p)), int(p)
        step = max(int(p * (1 - overlap)), 1) if size > p else p
        n = math.ceil((size - p) / step) + 1
        out.append([min(i * step, size - p) for i in range(n)])
    return out


def window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Windows (network passes without mirroring) of one image of spatial ``shape``."""
    return math.prod(len(s) for s in window_starts(shape, patch, overlap))


def case_windows(image_shape: Sequence[int], patch: Sequence[int], overlap: float, spatial_dims: int) -> int:
    """Window passes of one preprocessed (C, *S) case: 2D plans run every slice (last axis) as its own image."""
    spatial = list(image_shape[1:])
    if spatial_dims == 2:
        return spatial[-1] * window_count(spatial[:2], patch, overlap)
    return window_count(spatial, patch, overlap)


def _key(overlap: float, axes: Sequence[int]) -> str:
    return f"{float(overlap):g}|{','.join(str(a) for a in sorted(axes))}"


def overlap_counts(prob: np.ndarray, ref: np.ndarray, n_classes: int) -> np.ndarray:
    """Per foreground class of the argmax of ``prob`` (C, *S): [2 x overlap with ``ref``, predicted + reference
    voxels], to pool over cases (pooled Dice = sum of the first / sum of the second)."""
    pred = prob.argmax(0)
    out = np.zeros((n_classes - 1, 2))
    for c in range(1, n_classes):
        p, r = pred == c, ref == c
        out[c - 1] = 2 * np.count_nonzero(p & r), np.count_nonzero(p) + np.count_nonzero(r)
    return out


def pooled_dice(counts: np.ndarray) -> list[float]:
    """Dice per class from summed ``overlap_counts`` (NaN for a class neither predicted nor in the reference)."""
    return [float(a / b) if b else float("nan") for a, b in counts]


def mean_dice(per_class: Sequence[float]) -> float:
    """Mean over the classes that have a Dice (NaN when none has)."""
    return float(np.nanmean(per_class)) if any(d == d for d in per_class) else float("nan")


def inference_study(probabilities: Callable[[np.ndarray, float, tuple[int, ...]], np.ndarray],
                    cases: Sequence[tuple[np.ndarray, np.ndarray]], axes: Sequence[int], n_classes: int,
                    patch: Sequence[int], spatial_dims: int,
                    overlaps: Sequence[float] = OVERLAPS) -> dict[str, Any]:
    """Dice of every (overlap, mirror-axis subset) on ``cases`` (preprocessed image, label on the plan grid).

    ``probabilities(image, overlap, combo)`` is the softmax (C, *S) of one flip combination at one overlap (the
    predictor's own sliding window); overlaps that lay the windows of a case out alike share it. A subset's
    prediction is the mean of the flips of its axes. Dice is pooled over the cases per foreground class (voxels
    summed), then averaged over the classes: a per-case mean would swing by a third of a case's score whenever a
    few-voxel false lesion appears in a case without one (measured on the demo: 0.71 vs 0.87 between overlaps)."""
    subsets = mirror_combinations([int(a) for a in axes])
    counts = {_key(o, s): np.zeros((n_classes - 1, 2)) for o in overlaps for s in subsets}
    windows = {float(o): 0 for o in overlaps}
    for image, label in cases:
        done: dict[str, dict[tuple[int, ...], np.ndarray]] = {}  # window layout -> flips (same layout, same output)
        for o in overlaps:
            layout = repr(window_starts(image.shape[1:], patch, o))
            if layout not in done:
                done[layout] = {c: probabilities(image, o, c) for c in subsets}
            flips = done[layout]
            for s in subsets:
                members = [flips[c] for c in subsets if set(c) <= set(s)]
                counts[_key(o, s)] += overlap_counts(sum(members) / len(members), label, n_classes)
            windows[float(o)] += case_windows(image.shape, patch, o, spatial_dims)
    table = []
    for o in overlaps:
        for s in subsets:
            per_class = pooled_dice(counts[_key(o, s)])
            table.append({"overlap": float(o), "axes": list(s), "dice_by_class": per_class,
                          "counts": counts[_key(o, s)].tolist(),
                          "dice": mean_dice(per_class),
                          "windows": windows[float(o)], "passes": windows[float(o)] * 2 ** len(s)})
    study = {"n_cases": len(cases), "unit": "validation case", "axes": [int(a) for a in axes], "table": table,
             "dice": "per foreground class pooled over the cases (voxels summed), mean over the classes"}
    chosen = choose(study)
    study["gain_by_axis"] = chosen["gain_by_axis"]  # also read by packages that predate the table
    study["chosen"] = {"overlap": chosen["overlap"], "mirror_axes": chosen["mirror_axes"]}
    return study


def choose(study: dict[str, Any], tolerance: float = DICE_TOLERANCE) -> dict[str, Any]:
    """The cheapest candidate within ``tolerance`` Dice of full mirroring at overlap 0.5 in every foreground class
    (``within``; ties: higher mean Dice).

    Candidates: each overlap of the table x each prefix of the axes ordered by single-axis gain at overlap 0.5
    (largest first; the empty prefix is "no mirroring"). The reference is always a candidate, so there is a
    choice whenever the table has any Dice."""
    rows = {_key(r["overlap"], r["axes"]): r for r in study["table"]}
    axes = [int(a) for a in study["axes"]]
    ref_windows = rows[_key(REFERENCE_OVERLAP, [])]["windows"]
    none = rows[_key(REFERENCE_OVERLAP, [])]["dice"]
    gains = {str(a): rows[_key(REFERENCE_OVERLAP, [a])]["dice"] - none for a in axes}
    order = sorted(axes, key=lambda a: (-(gains[str(a)] if gains[str(a)] == gains[str(a)] else -math.inf), a))
    reference = rows[_key(REFERENCE_OVERLAP, axes)]
    overlaps = sorted({r["overlap"] for r in study["table"]}, reverse=True)
    candidates = []
    for o in overlaps:
        for k in range(len(order) + 1):
            r = rows.get(_key(o, order[:k]))
            if r is None:
                continue
            candidates.append({"overlap": o, "mirror_axes": sorted(order[:k]), "dice": r["dice"],
                               **({"dice_by_class": r["dice_by_class"]} if "dice_by_class" in r else {}),
                               "dice_vs_reference": r["dice"] - reference["dice"],
                               "cost": r["passes"] / ref_windows if ref_windows else float("nan")})
    ok = [c for c in candidates if within(c, reference, tolerance)]
    best = min(ok, key=lambda c: (round(c["cost"], 9), -c["dice"], -c["overlap"])) if ok else \
        next(c for c in candidates if c["overlap"] == REFERENCE_OVERLAP and c["mirror_axes"] == sorted(axes))
    return {"overlap": best["overlap"], "mirror_axes": best["mirror_axes"], "dice": best["dice"],
            "cost": best["cost"], "reference": {"overlap": REFERENCE_OVERLAP, "mirror_axes": sorted(axes),
                                                "dice": reference["dice"],
                                                **({"dice_by_class": reference["dice_by_class"]}
                                                   if "dice_by_class" in reference else {})},
            "rule": "every foreground class within the tolerance of the reference",
            "tolerance": tolerance, "gain_by_axis": gains, "axis_order": order, "candidates": candidates,
            "n_cases": study["n_cases"], "unit": study.get("unit", "validation case"), "cost_unit": COST_UNIT}


def within(candidate: dict[str, Any], reference: dict[str, Any], tolerance: float) -> bool:
    """Equal Dice: every foreground class at most ``tolerance`` below the reference (a class the reference scores
    and the candidate does not fails), so a gain in one class cannot pay for a loss in another; tables without
    per-class Dice compare the mean."""
    ref, cand = reference.get("dice_by_class"), candidate.get("dice_by_class")
    if ref is None or cand is None:
        return candidate["dice"] == candidate["dice"] and candidate["dice"] >= reference["dice"] - tolerance - 1e-12
    return all(r != r or (c == c and c >= r - tolerance - 1e-12) for r, c in zip(ref, cand))


def combine_fold_studies(studies: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The package's choice (``inference.json``) from its folds' studies: each candidate's Dice pooled over the
    folds' voxels (tables without counts: averaged weighted by cases), window passes summed. Studies recorded
    before the overlap table (mirror axes only) fall back to the axis-gain rule of ``tta.combine_studies`` (no
    overlap recorded: predict uses 0.5)."""
    studies = [s for s in studies if s.get("n_cases")]
    if not studies:
        return None
    if not all("table" in s for s in studies):
        return combine_studies(studies)
    n = sum(s["n_cases"] for s in studies)
    merged: dict[str, dict[str, Any]] = {}
    for s in studies:
        for r in s["table"]:
            m = merged.setdefault(_key(r["overlap"], r["axes"]), {"overlap": r["overlap"], "axes": r["axes"],
                                                                  "dice": 0.0, "windows": 0, "passes": 0, "n": 0,
                                                                  "counts": 0.0})
            m["dice"] += r["dice"] * s["n_cases"]
            m["windows"] += r["windows"]
            m["passes"] += r["passes"]
            m["n"] += s["n_cases"]
            m["counts"] = m["counts"] + np.asarray(r["counts"]) if "counts" in r and m["counts"] is not None else None
    table = []
    for m in merged.values():
        if m["n"] != n:  # a candidate some fold did not measure
            continue
        row = {**m, "dice": m["dice"] / n}
        if m["counts"] is not None:  # pool the folds' voxels, as within a fold
            row["dice_by_class"] = pooled_dice(m["counts"])
            row["dice"] = mean_dice(row["dice_by_class"])
        table.append({k: v for k, v in row.items() if k != "counts"})
    axes = sorted({int(a) for s in studies for a in s["axes"]})
    out = choose({"table": table, "axes": axes, "n_cases": n})
    return {**out, "folds": len(studies),
            "how": "hard Dice per foreground class pooled over the folds' validation cases after training, "
                   "predicted with the softmax averaged over the flips of each axis subset at each overlap; equal = "
                   "every class within the tolerance of full mirroring at 0.5; cost counted as network window "
                   "passes from the case shapes (not timed)"}
