"""Planner: same dataset -> same plan; choices follow the stated rules (worked by hand on small inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.data.dataset import load_dataset
from medsight.data.fingerprint import compute_fingerprint
from medsight.synthetic.toy import make_toy_dataset
from medsight.errors import ConfigError
from medsight.plan.plan import Plan
from medsight.plan.planner import _memory_gb, make_plan


def _fp(spacings, shapes, name="T1"):
    return {"dataset": "x", "spacings": spacings, "shapes": shapes, "channels": {"0": name},
            "labels": {"background": 0, "a": 1},
            "intensity": {"0": {"name": name, "mean": 40.0, "std": 10.0, "p00_5": -100.0, "median": 40.0,
                                "p99_5": 200.0}}}


def test_same_dataset_same_plan(tmp_path):
    a = make_toy_dataset(tmp_path / "a", n_cases=4, seed=5)
    b = make_toy_dataset(tmp_path / "b", n_cases=4, seed=5)
    pa = make_plan(compute_fingerprint(load_dataset(a)), memory_gb=0.1)
    pb = make_plan(compute_fingerprint(load_dataset(b)), memory_gb=0.1)
    assert pa.to_json().replace('"a"', '"b"') == pb.to_json().replace('"a"', '"b"')
    assert pa.sha256() == pb.sha256()
    path = pa.save(tmp_path / "plan.json")
    assert Plan.load(path).sha256() == pa.sha256()  # JSON round trip keeps the hash


def test_target_spacing_is_median_and_patch_fits_budget():
    fp = _fp([[1.0, 1.0, 2.0], [0.8, 0.8, 2.5], [1.2, 1.2, 3.0]], [[200, 200, 80], [250, 250, 60], [160, 160, 50]])
    plan = make_plan(fp, memory_gb=1.0, base_filters=16)
    assert plan.target_spacing == [1.0, 1.0, 2.5]  # per-axis median, worked by hand
    cfg = plan.config("3d")
    div = np.prod(np.asarray(cfg.strides), axis=0)
    assert all(p % d == 0 for p, d in zip(cfg.patch_size, div))
    assert _memory_gb(cfg.patch_size, cfg.batch_size, cfg.filters, cfg.strides) <= 1.0
    bigger = make_plan(fp, memory_gb=8.0, base_filters=16).config("3d")
    assert np.prod(bigger.patch_size) > np.prod(cfg.patch_size)
    # median resampled shape: axis 0 = median(200*1/1, 250*0.8/1, 160*1.2/1) = 200
    assert cfg.median_shape[0] == 200


def test_anisotropic_axis_gets_no_early_pooling_or_3x3x3_kernel():
    fp = _fp([[0.7, 0.7, 5.0]] * 3, [[256, 256, 30]] * 3)
    cfg = make_plan(fp, memory_gb=2.0, base_filters=8).config("3d")
    assert cfg.kernels[0] == [3, 3, 1]  # 5 mm is > 2x 0.7 mm
    assert cfg.strides[1] == [2, 2, 1]


def test_ct_is_clipped_and_zscored_with_dataset_statistics_mr_per_case():
    ct = make_plan(_fp([[1, 1, 1]], [[64, 64, 64]], "CT"), memory_gb=1)
    assert ct.normalisation["0"] == {"scheme": "ct", "clip": [-100.0, 200.0], "mean": 40.0, "std": 10.0}
    mr = make_plan(_fp([[1, 1, 1]], [[64, 64, 64]], "T2"), memory_gb=1)
    assert mr.normalisation["0"] == {"scheme": "zscore_case"}


def test_every_choice_has_a_reason_and_bad_budget_fails():
    plan = make_plan(_fp([[1, 1, 1]], [[64, 64, 64]]), memory_gb=1)
    assert len(plan.reasons) >= 3 and all(c.reasons for c in plan.configurations.values())
    with pytest.raises(ConfigError, match="memory-gb"):
        make_plan(_fp([[1, 1, 1]], [[64, 64, 64]]), memory_gb=0)
