"""Lesion-wise metrics against a brute-force reference: flood-fill components, set IoU, exhaustive matching."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti
from medsight.metrics.lesions import case_lesions, summarise_lesions

SPACING = (1.0, 2.0, 1.5)


# ----------------------------------------------------------------------------------------- brute force
def _flood_components(mask: np.ndarray) -> list[set[tuple[int, ...]]]:
    """Connected components by breadth-first flood fill over the full (3^n - 1) neighbourhood."""
    todo = {tuple(int(v) for v in idx) for idx in np.argwhere(mask)}
    steps = [d for d in itertools.product((-1, 0, 1), repeat=mask.ndim) if any(d)]
    comps = []
    while todo:
        seed = todo.pop()
        comp, frontier = {seed}, [seed]
        while frontier:
            v = frontier.pop()
            for d in steps:
                n = tuple(a + b for a, b in zip(v, d))
                if n in todo:
                    todo.remove(n)
                    comp.add(n)
                    frontier.append(n)
        comps.append(comp)
    return comps


def _brute(pred: np.ndarray, ref: np.ndarray, thr: float = 0.1) -> dict:
    P, R = _flood_components(pred), _flood_components(ref)
    iou = [[len(p & r) / len(p | r) for r in R] for p in P]
    best, best_pairs = -1.0, []
    # every one-to-one partial matching over eligible pairs; keep the one of largest total IoU
    eligible = [(i, j) for i in range(len(P)) for j in range(len(R)) if iou[i][j] > thr]
    for k in range(len(eligible) + 1):
        for combo in itertools.combinations(eligible, k):
            if len({i for i, _ in combo}) < k or len({j for _, j in combo}) < k:
                continue
            total = sum(iou[i][j] for i, j in combo)
            if total > best + 1e-12:
                best, best_pairs = total, list(combo)
    tp = len(best_pairs)
    dice = sorted([2 * len(P[i] & R[j]) / (len(P[i]) + len(R[j])) for i, j in best_pairs] + [0.0] * (len(R) - tp))
    return {"tp": tp, "fp": len(P) - tp, "fn": len(R) - tp, "sum_iou": best if best_pairs else 0.0, "dice": dice,
            "ref_sizes": sorted(len(r) for r in R), "pred_sizes": sorted(len(p) for p in P)}


def _check(pred: np.ndarray, ref: np.ndarray) -> None:
    got = case_lesions(pred, ref, SPACING)
    want = _brute(pred, ref)
    assert (got.tp, got.fp, got.fn) == (want["tp"], want["fp"], want["fn"])
    assert got.sum_iou == pytest.approx(want["sum_iou"])
    assert sorted(r["dice"] for r in got.ref) == pytest.approx(want["dice"])
    voxel_ml = np.prod(SPACING) / 1000
    assert sorted(r["volume_ml"] for r in got.ref) == pytest.approx([v * voxel_ml for v in want["ref_sizes"]])
    assert sorted(p["volume_ml"] for p in got.pred) == pytest.approx([v * voxel_ml for v in want["pred_sizes"]])


# ----------------------------------------------------------------------------------------- hand-built cases
def test_touching_lesions_are_one_component_and_a_merge_costs_a_false_negative() -> None:
    ref = np.zeros((12, 12, 6), bool)
    ref[1:4, 1:4, 1:3] = True
    ref[4:7, 4:7, 3:5] = True  # touches the first only at an edge/corner: one lesion under full connectivity
    ref[8:11, 1:4, 1:4] = True  # a separate lesion
    pred = np.zeros_like(ref)
    pred[1:11, 1:4, 1:4] = True  # one blob over the first and the separate lesion: they merge
    got = case_lesions(pred, ref, SPACING)
    assert len(got.ref) == 2 and len(got.pred) == 1
    assert (got.tp, got.fp, got.fn) == (1, 0, 1)
    _check(pred, ref)


def test_split_lesion_gives_one_match_and_one_false_positive() -> None:
    ref = np.zeros((14, 8, 8), bool)
    ref[2:12, 2:6, 2:6] = True
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 2:6] = True
    pred[7:12, 2:6, 2:6] = True  # the lesion split in two by a one-voxel gap
    got = case_lesions(pred, ref, SPACING)
    assert (got.tp, got.fp, got.fn) == (1, 1, 0)
    # the larger piece (5 of 10 slices) is the match: IoU 5/10, Dice 2*80/(80+160)
    assert got.ref[0]["iou"] == pytest.approx(0.5) and got.ref[0]["dice"] == pytest.approx(2 * 80 / 240)
    counts = got.counts()
    assert counts["pq"] == pytest.approx(0.5 / (1 + 0.5 * 1))
    _check(pred, ref)


def test_below_iou_threshold_is_a_miss_and_a_false_positive() -> None:
    ref = np.zeros((10, 10, 10), bool)
    ref[0:10, 0:10, 0:2] = True  # 200 voxels
    pred = np.zeros_like(ref)
    pred[0:3, 0:3, 1:3] = True  # 18 voxels, 9 overlapping: IoU 9/209 < 0.1
    got = case_lesions(pred, ref, SPACING)
    assert (got.tp, got.fp, got.fn) == (0, 1, 1)
    assert case_lesions(pred, ref, SPACING, iou_threshold=0.04).tp == 1


def test_random_blobs_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(25):
        ref = rng.random((9, 9, 5)) > 0.88
        pred = ref.copy()
        pred ^= rng.random(ref.shape) > 0.85  # flip some voxels: splits, merges, new and lost lesions
        _check(pred, ref)


def test_empty_masks() -> None:
    empty = np.zeros((5, 5, 5), bool)
    got = case_lesions(empty, empty, SPACING)
    assert (got.tp, got.fp, got.fn) == (0, 0, 0) and math.isnan(got.counts()["pq"])


# ----------------------------------------------------------------------------------------- summary and FROC
def _cases() -> list:
    rng = np.random.default_rng(7)
    out = []
    for n in range(6):
        ref = np.zeros((16, 16, 8), bool)
        pred = np.zeros_like(ref)
        prob = np.zeros(ref.shape)
        ref[2:6, 2:6, 2:5] = n % 3 != 0
        ref[9:13, 9:13, 2:5] = True
        pred[2:6, 2:6, 2:5] = n % 2 == 0  # hit or false positive depending on the case
        pred[9:12, 9:13, 2:5] = n != 4  # missed once
        pred[13:15, 1:3, 6:8] = n == 5  # a small false positive
        prob[pred] = rng.uniform(0.5, 1.0)
        prob[13:15, 1:3, 6:8] = 0.55 if n == 5 else prob[13:15, 1:3, 6:8]
        out.append(case_lesions(pred, ref, SPACING, f"c{n}", f"p{n // 2}", prob))
    return out


def test_summary_pools_counts_and_froc_matches_hand_count() -> None:
    cases = _cases()
    s = summarise_lesions(cases, n_boot=200)
    tp = sum(c.tp for c in cases)
    fp = sum(c.fp for c in cases)
    fn = sum(c.fn for c in cases)
    m = s["metrics"]
    assert m["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert m["f1"]["value"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["fp_per_case"]["value"] == pytest.approx(fp / 6)
    assert m["pq"]["value"] == pytest.approx(sum(c.sum_iou for c in cases) / (tp + 0.5 * fp + 0.5 * fn))
    assert m["sensitivity"]["lo"] <= m["sensitivity"]["value"] <= m["sensitivity"]["hi"]
    assert s["n_patients"] == 3
    # FROC by hand: every threshold among the lesion scores, counting kept hits and false positives
    preds = [(p["score"], p["matched_ref"] > 0) for c in cases for p in c.pred]
    n_ref = tp + fn
    for point in s["froc"]["points"][1:]:
        kept = [hit for score, hit in preds if score >= point["threshold"]]
        assert point["sensitivity"] == pytest.approx(sum(kept) / n_ref)
        assert point["fp_per_case"] == pytest.approx((len(kept) - sum(kept)) / 6)
    best = max(sum(h for sc, h in preds if sc >= t) / n_ref for t, _ in preds
               if sum(1 - h for sc, h in preds if sc >= t) / 6 <= 1)
    assert s["froc"]["sensitivity_at_1fp"] == pytest.approx(best)


def test_evaluate_seg_lesions_cli(tmp_path: Path) -> None:
    from medsight.cli.main import main

    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    rng = np.random.default_rng(1)
    for n in range(4):
        ref = np.zeros((16, 16, 8), np.uint8)
        ref[1:15, 1:15, 1:7] = 1
        ref[2:6, 2:6, 2:5] = 2
        ref[9:13, 9:13, 2:5] = 2 if n != 1 else 1
        pred = ref.copy()
        pred[9:13, 9:13, 2:5] = 2 if n % 2 == 0 else 1
        pred[int(rng.integers(1, 14)), 12:14, 6] = 2  # a small false positive somewhere
        for folder, arr in ((ref_dir, ref), (pred_dir, pred)):
            write_nifti(Image(arr, Geometry.identity(3, SPACING)), folder / f"case_{n}.nii.gz", sidecar=False)
    (ref_dir.parent / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "brain": 1, "lesion": 2}}))
    out = tmp_path / "eval"
    main(["-q", "evaluate", "seg", str(pred_dir), str(ref_dir), "--out", str(out), "--n-boot", "50", "--lesions"])
    per_case = pd.read_csv(out / "lesions_per_case.csv")
    assert set(per_case["label"]) == {"lesion"}  # brain is not a lesion label
    from medsight.io.nifti import read_nifti

    for _, row in per_case.iterrows():
        p = read_nifti(pred_dir / f"{row['case_id']}.nii.gz").array == 2
        r = read_nifti(ref_dir / f"{row['case_id']}.nii.gz").array == 2
        want = _brute(p, r)
        assert (row["tp"], row["fp"], row["fn"]) == (want["tp"], want["fp"], want["fn"])
    summary = json.loads((out / "lesion_summary.json").read_text())["labels"]["lesion"]
    assert summary["tp"] == per_case["tp"].sum() and summary["fn"] == per_case["fn"].sum()
    matches = pd.read_csv(out / "lesion_matches.csv")
    assert len(matches[matches["source"] == "reference"]) == per_case["n_ref"].sum()
    assert (out / "froc.csv").is_file() and (out / "per_case.csv").is_file()
