"""Segmentation metrics against MONAI (same definitions) and a brute-force all-pairs surface computation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                           compute_surface_dice)
from scipy.ndimage import binary_erosion, gaussian_filter

from medsight.errors import MetricError
from medsight.metrics.segmentation import dice, mask_metrics, segmentation_metrics
from medsight.metrics.surface import surface_distances

SPACING = (0.8, 1.3, 2.5)


def _monai(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tol: float) -> dict[str, float]:
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": compute_dice(p, r).item(),
            "hd": compute_hausdorff_distance(p, r, spacing=spacing).item(),
            "hd95": compute_hausdorff_distance(p, r, percentile=95, spacing=spacing).item(),
            "assd": compute_average_surface_distance(p, r, symmetric=True, spacing=spacing).item(),
            "nsd": compute_surface_dice(p, r, [tol], spacing=spacing).item(),
        }


def _blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    ref = gaussian_filter(rng.standard_normal(shape), 1.5) > 0.05
    pred = gaussian_filter(rng.standard_normal(shape), 1.5) > 0.05
    return pred | (ref & (rng.random(shape) < 0.5)), ref


@pytest.mark.parametrize("method", ["edt", "kdtree", "grid", "auto"])
def test_matches_monai_on_random_3d_masks(method: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(8, 24, size=3))
        pred, ref = _blobs(rng, shape)
        if not pred.any() or not ref.any():
            continue
        ours = mask_metrics(pred, ref, SPACING, nsd_tolerance_mm=1.5, method=method)
        theirs = _monai(pred, ref, SPACING, 1.5)
        for key in ("dice", "hd", "assd", "nsd"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6), key
        # MONAI takes the percentile of float32 distances in float32 (torch.quantile): a few 1e-6 at most
        assert ours["hd95"] == pytest.approx(theirs["hd95"], rel=1e-5)


def test_matches_monai_in_2d() -> None:
    rng = np.random.default_rng(3)
    pred, ref = _blobs(rng, (40, 33))
    ours = mask_metrics(pred, ref, (0.7, 2.0), nsd_tolerance_mm=2.0)
    theirs = _monai(pred, ref, (0.7, 2.0), 2.0)
    for key in ("dice", "hd", "hd95", "assd", "nsd"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key


def _brute_force(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Surface voxels by SciPy erosion (outside = background), then every surface-pair distance in NumPy."""
    sp = np.asarray(spacing)
    edge_p = pred & ~binary_erosion(pred, border_value=0)
    edge_r = ref & ~binary_erosion(ref, border_value=0)
    a, b = np.argwhere(edge_p) * sp, np.argwhere(edge_r) * sp
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


@pytest.mark.parametrize("method", ["edt", "kdtree", "grid"])
def test_distances_equal_brute_force_all_pairs(method: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        shape = tuple(int(v) for v in rng.integers(5, 14, size=3))
        pred, ref = rng.random(shape) < 0.3, rng.random(shape) < 0.25  # touching the image border too
        d_pr, d_rp = surface_distances(pred, ref, SPACING, method=method)
        b_pr, b_rp = _brute_force(pred, ref, SPACING)
        np.testing.assert_allclose(d_pr, b_pr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d_rp, b_rp, rtol=1e-12, atol=1e-12)
        m = mask_metrics(pred, ref, SPACING, 2.0, method=method)
        allv = np.concatenate([b_pr, b_rp])
        assert m["hd"] == pytest.approx(allv.max(), rel=1e-12)
        assert m["hd95"] == pytest.approx(max(np.percentile(b_pr, 95), np.percentile(b_rp, 95)), rel=1e-12)
        assert m["assd"] == pytest.approx(allv.mean(), rel=1e-12)
        assert m["nsd"] == pytest.approx(np.mean(allv <= 2.0), rel=1e-12)


def test_grid_search_is_exact_near_and_beyond_its_offsets() -> None:
    """Surfaces a voxel apart (found by the first offsets) and 40 mm apart (past every offset tried: the k-d
    tree fallback) give the brute-force distances; the anisotropic spacing orders offsets by mm, not voxels."""
    from medsight.metrics.surface import GRID_OFFSETS, _offsets

    offs, length = _offsets(SPACING, GRID_OFFSETS)
    assert len(offs) >= GRID_OFFSETS and np.all(np.diff(length) >= 0) and length[0] == pytest.approx(0.8)
    rng = np.random.default_rng(5)
    pred, ref = np.zeros((40, 30, 24), bool), np.zeros((40, 30, 24), bool)
    ref[5:15, 5:12, 4:9] = rng.random((10, 7, 5)) < 0.7
    pred[6:16, 5:13, 4:10] = rng.random((10, 8, 6)) < 0.7
    pred[36:39, 25:28, 20:23] = True  # a far island: ~40 mm from the reference
    d_pr, d_rp = surface_distances(pred, ref, SPACING, method="grid")
    b_pr, b_rp = _brute_force(pred, ref, SPACING)
    np.testing.assert_allclose(d_pr, b_pr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d_rp, b_rp, rtol=1e-12, atol=1e-12)
    assert d_pr.max() > 30


def test_overlap_and_volume_by_hand() -> None:
    ref = np.zeros((10, 10, 10), bool)
    ref[2:6, 2:6, 2:6] = True  # 64 voxels
    pred = np.zeros_like(ref)
    pred[4:8, 2:6, 2:6] = True  # 64 voxels, 32 shared
    m = mask_metrics(pred, ref, (0.5, 1.0, 2.0))
    assert m["dice"] == pytest.approx(2 * 32 / 128)
    assert m["iou"] == pytest.approx(32 / 96)
    assert m["sensitivity"] == pytest.approx(0.5) and m["precision"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx((1000 - 96) / (1000 - 64))
    assert m["volume_ref_ml"] == pytest.approx(64 * 1.0 / 1000)
    assert m["volume_diff_ml"] == pytest.approx(0.0)
    # shifted by 2 voxels along axis 0 (0.5 mm each): the farthest surface voxel is 1 mm from the other surface
    assert m["hd"] == pytest.approx(1.0)
    assert dice(pred, ref) == pytest.approx(0.5)


def test_empty_mask_conventions() -> None:
    empty = np.zeros((6, 6, 6), bool)
    one = empty.copy()
    one[3, 3, 3] = True
    both = mask_metrics(empty, empty, SPACING)
    assert (both["dice"], both["iou"], both["hd"], both["hd95"], both["assd"], both["nsd"]) == (1, 1, 0, 0, 0, 1)
    assert math.isnan(both["sensitivity"]) and math.isnan(both["precision"]) and both["specificity"] == 1.0
    missed = mask_metrics(empty, one, SPACING)
    assert missed["dice"] == 0 and missed["sensitivity"] == 0 and math.isnan(missed["precision"])
    assert missed["hd"] == math.inf and missed["hd95"] == math.inf and missed["assd"] == math.inf
    assert missed["nsd"] == 0.0 and missed["pred_empty"] and not missed["ref_empty"]
    spurious = mask_metrics(one, empty, SPACING)
    assert spurious["dice"] == 0 and math.isnan(spurious["sensitivity"]) and spurious["precision"] == 0
    assert spurious["hd"] == math.inf and spurious["nsd"] == 0.0
    assert dice(empty, empty) == 1.0


def test_one_voxel_masks() -> None:
    a = np.zeros((5, 6, 7), bool)
    b = a.copy()
    a[1, 1, 1] = True
    b[3, 4, 1] = True
    m = mask_metrics(a, b, SPACING)
    expected = math.hypot(2 * 0.8, 3 * 1.3)
    assert m["hd"] == pytest.approx(expected) and m["hd95"] == pytest.approx(expected)
    assert m["assd"] == pytest.approx(expected) and m["dice"] == 0.0
    same = mask_metrics(a, a, SPACING)
    assert same["dice"] == 1.0 and same["hd"] == 0.0 and same["nsd"] == 1.0


def test_label_maps_one_row_per_foreground_label() -> None:
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 3, size=(12, 12, 8))
    pred = np.where(rng.random(ref.shape) < 0.8, ref, rng.integers(0, 3, size=ref.shape))
    rows = segmentation_metrics(pred, ref, SPACING, {0: "background", 1: "grey_matter", 2: "white_matter"})
    assert [r["name"] for r in rows] == ["grey_matter", "white_matter"]
    for r in rows:
        assert r["dice"] == pytest.approx(_monai(pred == r["label"], ref == r["label"], SPACING, 1.0)["dice"], rel=1e-6)
    absent = segmentation_metrics(pred, ref, SPACING, {7: "lesion"})[0]
    assert absent["dice"] == 1.0 and absent["hd95"] == 0.0


def test_input_errors_are_metric_errors() -> None:
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(MetricError, match="shape"):
        mask_metrics(a, np.zeros((4, 4, 5), bool), SPACING)
    with pytest.raises(MetricError, match="spacing"):
        mask_metrics(a, a, (1.0, 1.0))
    with pytest.raises(MetricError, match="positive"):
        mask_metrics(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(MetricError, match="NaN"):
        segmentation_metrics(np.full((4, 4, 4), np.nan), a.astype(float), SPACING, {1: "x"})
    with pytest.raises(MetricError, match="method"):
        mask_metrics(a, a, SPACING, method="chamfer")
    with pytest.raises(MetricError, match="tolerance"):
        mask_metrics(a, a, SPACING, nsd_tolerance_mm=-1)
