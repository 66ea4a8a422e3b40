"""What ``predict`` runs by default, chosen by measured Dice and counted cost: sliding-window overlap x a set of flips.

Each flip (a tuple of mirrored axes; the identity always included) is one more network pass per window; a lower
window overlap can pay for it (the demo plan's [79, 97, 81] volumes need 64 windows of [32, 48, 40] at overlap 0.5
but 27 at 0.25 or 0). So the study that runs after a fold is trained predicts its validation cases with every flip
combination of the plan's mirror axes at each overlap of ``OVERLAPS`` (each flip's softmax once per window layout
and case), and scores every candidate set of flips as the average of those softmaxes, no extra network run: the
identity plus up to ``MAX_FLIPS`` - 1 other flips (64 sets per overlap for 3 axes), and each axis subset with all
its combinations (full mirroring: the reference). Cost is counted, not timed: network window passes (windows at
that overlap, from the case shapes as MONAI's sliding window lays them, times flips), in units of one un-mirrored
pass at overlap 0.5. ``choose`` takes the cheapest candidate whose Dice is within ``DICE_TOLERANCE`` of the
reference, full mirroring at overlap 0.5 (the old default), in every foreground class; ties go to the higher mean
Dice. The choice (``flips``, and their axes as ``mirror_axes`` for readers that predate flip sets) and a compact
candidate table travel in the package (``inference.json``).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from medsight.segmentation.tta import combine_studies, mirror_combinations

OVERLAPS = (0.5, 0.25, 0.0)  # sliding-window overlaps the study tries (0.5: predict's old and reference default)
REFERENCE_OVERLAP = 0.5
DICE_TOLERANCE = 0.005  # issue 30's "equal Dice": a candidate may lose at most this much Dice (per class) to the ref
MAX_FLIPS = 4  # the study scores every set of the identity + up to 3 other flips (4 flips = 4 passes per window)
Flip = tuple[int, ...]
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


def canonical(flips: Iterable[Sequence[int]]) -> tuple[Flip, ...]:
    """A set of flips in one order (fewest axes first), each flip's axes sorted: equal sets, equal keys."""
    return tuple(sorted({tuple(sorted(int(a) for a in f)) for f in flips}, key=lambda f: (len(f), f)))


def flip_axes(flips: Iterable[Sequence[int]]) -> list[int]:
    """The axes any of ``flips`` mirrors (what ``mirror_axes`` records for readers that predate flip sets)."""
    return sorted({int(a) for f in flips for a in f})


def row_flips(row: dict[str, Any]) -> tuple[Flip, ...]:
    """A table row's or candidate's flips; rows recorded before flip sets name an axis subset (all its flips)."""
    if "flips" in row:
        return canonical(row["flips"])
    return canonical(mirror_combinations([int(a) for a in row.get("axes", row.get("mirror_axes", []))]))


def flip_sets(axes: Sequence[int], max_flips: int = MAX_FLIPS) -> list[tuple[Flip, ...]]:
    """The study's candidates: the identity with every choice of up to ``max_flips`` - 1 other flip combinations of
    ``axes`` (1 + 7 + 21 + 35 = 64 for 3 axes), then each axis subset with all its combinations not yet listed
    (for 3 axes only the full mirroring, the reference)."""
    combos = mirror_combinations([int(a) for a in axes])
    out = [canonical(((),) + extra) for k in range(min(max_flips, len(combos)))
           for extra in itertools.combinations(combos[1:], k)]
    seen = set(out)
    for subset in combos:
        full = canonical(mirror_combinations(list(subset)))
        if full not in seen:
            out.append(full)
            seen.add(full)
    return out


def _key(overlap: float, flips: Iterable[Sequence[int]]) -> str:
    return f"{float(overlap):g}|" + ";".join(",".join(str(a) for a in f) for f in canonical(flips))


def overlap_counts(prob: np.ndarray, ref: np.ndarray, n_classes: int) -> np.ndarray:
    """Per foreground class of the argmax of ``prob`` (C, *S): [2 x overlap with ``ref``, predicted + reference
    voxels], to pool over cases (pooled Dice = sum of the first / sum of the second). One confusion count
    (``np.bincount``) instead of three masks per class: the study scores ~200 flip sets per case."""
    pred = prob.argmax(0).ravel().astype(np.int64)
    r = np.asarray(ref).ravel()
    r = np.where((r >= 0) & (r < n_classes), r, n_classes).astype(np.int64)  # other values: no class
    cm = np.bincount(pred * (n_classes + 1) + r, minlength=n_classes * (n_classes + 1)).reshape(n_classes, -1)
    out = np.zeros((n_classes - 1, 2))
    for c in range(1, n_classes):
        out[c - 1] = 2 * cm[c, c], cm[c].sum() + cm[:, c].sum()
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
                    overlaps: Sequence[float] = OVERLAPS, max_flips: int = MAX_FLIPS) -> dict[str, Any]:
    """Dice of every (overlap, flip set of ``flip_sets``) on ``cases`` (preprocessed image, label on the plan grid).

    ``probabilities(image, overlap, combo)`` is the softmax (C, *S) of one flip combination at one overlap (the
    predictor's own sliding window); overlaps that lay the windows of a case out alike share it. A set's
    prediction is the mean of its flips' softmaxes. Dice is pooled over the cases per foreground class (voxels
    summed), then averaged over the classes: a per-case mean would swing by a third of a case's score whenever a
    few-voxel false lesion appears in a case without one (measured on the demo: 0.71 vs 0.87 between overlaps).
    ``scoring_cpu_seconds``: the CPU spent averaging and scoring the sets (the rest is the network)."""
    combos = mirror_combinations([int(a) for a in axes])
    sets = flip_sets(axes, max_flips)
    counts = {_key(o, f): np.zeros((n_classes - 1, 2)) for o in overlaps for f in sets}
    windows = {float(o): 0 for o in overlaps}
    scoring = 0.0
    for image, label in cases:
        done: dict[str, dict[str, np.ndarray]] = {}  # window layout -> counts per flip set (same layout, same output)
        for o in overlaps:
            layout = repr(window_starts(image.shape[1:], patch, o))
            if layout not in done:
                flips = {c: probabilities(image, o, c) for c in combos}
                t = time.process_time()
                done[layout] = {_key(0, f): overlap_counts(sum(flips[c] for c in f) / len(f), label, n_classes)
                                for f in sets}
                scoring += time.process_time() - t
            for f in sets:
                counts[_key(o, f)] += done[layout][_key(0, f)]
            windows[float(o)] += case_windows(image.shape, patch, o, spatial_dims)
    table = []
    for o in overlaps:
        for f in sets:
            per_class = pooled_dice(counts[_key(o, f)])
            table.append({"overlap": float(o), "flips": [list(c) for c in f], "dice_by_class": per_class,
                          "counts": counts[_key(o, f)].tolist(), "dice": mean_dice(per_class),
                          "windows": windows[float(o)], "passes": windows[float(o)] * len(f)})
    study = {"n_cases": len(cases), "unit": "validation case", "axes": [int(a) for a in axes], "table": table,
             "max_flips": max_flips, "scoring_cpu_seconds": round(scoring, 2),
             "dice": "per foreground class pooled over the cases (voxels summed), mean over the classes"}
    chosen = choose(study)
    study["gain_by_axis"] = chosen["gain_by_axis"]  # also read by packages that predate the table
    study["chosen"] = {k: chosen[k] for k in ("overlap", "mirror_axes", "flips")}
    return study


def _margin(candidate: dict[str, Any], reference: dict[str, Any]) -> float:
    """The candidate's worst foreground-class Dice minus the reference's (mean Dice without per-class figures)."""
    ref, cand = reference.get("dice_by_class"), candidate.get("dice_by_class")
    if ref is None or cand is None:
        return candidate["dice"] - reference["dice"]
    diffs = [c - r if c == c else -math.inf for r, c in zip(ref, cand) if r == r]
    return min(diffs) if diffs else 0.0


def compact(candidates: Sequence[dict[str, Any]], keep: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidate rows a package keeps: per (overlap, number of flips) the one with the best worst-class margin
    to the reference (then mean Dice), which shows why cheaper groups lost and what dearer ones gain, plus ``keep``
    (the choice and the reference); ordered by cost."""
    best: dict[tuple[float, int], dict[str, Any]] = {}
    for c in candidates:
        g = (c["overlap"], len(c["flips"]))
        if g not in best or (c["margin"], c["dice"]) > (best[g]["margin"], best[g]["dice"]):
            best[g] = c
    rows = {_key(c["overlap"], c["flips"]): c for c in [*best.values(), *keep]}
    return sorted(rows.values(), key=lambda c: (c["cost"], -c["dice"] if c["dice"] == c["dice"] else 0))


def choose(study: dict[str, Any], tolerance: float = DICE_TOLERANCE) -> dict[str, Any]:
    """The cheapest candidate within ``tolerance`` Dice of full mirroring at overlap 0.5 in every foreground class
    (``within``; ties: higher mean Dice, then the higher overlap, then fewer flips).

    Candidates: every row of the table (overlap x flip set; tables recorded before flip sets: overlap x axis
    subset). The reference is always a candidate, so there is a choice whenever the table has any Dice."""
    rows = {_key(r["overlap"], row_flips(r)): r for r in study["table"]}
    axes = [int(a) for a in study["axes"]]
    full = canonical(mirror_combinations(axes))
    reference = rows[_key(REFERENCE_OVERLAP, full)]
    ref_windows = reference["windows"]
    none = rows[_key(REFERENCE_OVERLAP, [()])]["dice"]
    gains = {str(a): rows[_key(REFERENCE_OVERLAP, [(), (a,)])]["dice"] - none for a in axes
             if _key(REFERENCE_OVERLAP, [(), (a,)]) in rows}
    order = sorted(gains, key=lambda a: (-(gains[a] if gains[a] == gains[a] else -math.inf), int(a)))
    candidates = []
    for r in study["table"]:
        f = row_flips(r)
        c = {"overlap": float(r["overlap"]), "flips": [list(x) for x in f], "dice": r["dice"],
             **({"dice_by_class": r["dice_by_class"]} if "dice_by_class" in r else {}),
             "dice_vs_reference": r["dice"] - reference["dice"],
             "cost": r["passes"] / ref_windows if ref_windows else float("nan")}
        candidates.append({**c, "margin": _margin(c, reference), "within": within(c, reference, tolerance)})
    ok = [c for c in candidates if c["within"]]
    ref_cand = next(c for c in candidates if c["overlap"] == REFERENCE_OVERLAP and row_flips(c) == full)
    best = min(ok, key=lambda c: (round(c["cost"], 9), -c["dice"], -c["overlap"], len(c["flips"]))) if ok \
        else ref_cand
    return {"overlap": best["overlap"], "flips": best["flips"], "mirror_axes": flip_axes(best["flips"]),
            "dice": best["dice"], **({"dice_by_class": best["dice_by_class"]} if "dice_by_class" in best else {}),
            "cost": best["cost"],
            "reference": {"overlap": REFERENCE_OVERLAP, "mirror_axes": sorted(axes), "flips": [list(x) for x in full],
                          "dice": reference["dice"],
                          **({"dice_by_class": reference["dice_by_class"]} if "dice_by_class" in reference else {})},
            "rule": "every foreground class within the tolerance of the reference",
            "tolerance": tolerance, "gain_by_axis": gains, "axis_order": [int(a) for a in order],
            "candidates": compact(candidates, [best, ref_cand]), "n_candidates": len(candidates),
            "n_within": len(ok), "candidates_kept": "per (overlap, number of flips) the best worst-class margin to "
                                                    "the reference, the choice and the reference",
            "n_cases": study["n_cases"], "unit": study.get("unit", "validation case"), "cost_unit": COST_UNIT}


def within(candidate: dict[str, Any], reference: dict[str, Any], tolerance: float) -> bool:
    """Equal Dice: every foreground class at most ``tolerance`` below the reference (a class the reference scores
    and the candidate does not fails), so a gain in one class cannot pay for a loss in another; tables without
    per-class Dice compare the mean."""
    return _margin(candidate, reference) >= -tolerance - 1e-12  # NaN margins (no Dice) fail


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
            f = row_flips(r)
            m = merged.setdefault(_key(r["overlap"], f), {"overlap": r["overlap"], "flips": [list(x) for x in f],
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
                   "predicted with the softmax averaged over each candidate set of flips at each overlap; equal = "
                   "every class within the tolerance of full mirroring at 0.5; cost counted as network window "
                   "passes from the case shapes (not timed)"}
