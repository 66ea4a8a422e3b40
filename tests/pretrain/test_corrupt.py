"""Models Genesis corruptions and the NT-Xent loss, checked against hand-worked references."""

from __future__ import annotations

import math

import numpy as np
import torch

from medsight.pretrain.corrupt import bezier_curve, corrupt, inpaint, local_shuffle, outpaint
from medsight.pretrain.task import nt_xent


def test_bezier_curve_is_the_cubic_formula():
    pts = np.array([[0, 0], [0.2, 0.9], [0.6, 0.1], [1, 1]], dtype=float)
    xs, ys = bezier_curve(pts, n=3)  # t = 0, 0.5, 1
    # t = 0.5: (P0 + 3 P1 + 3 P2 + P3) / 8
    assert np.allclose([xs[1], ys[1]], [(0 + 0.6 + 1.8 + 1) / 8, (0 + 2.7 + 0.3 + 1) / 8])
    assert (xs[0], ys[0], xs[-1], ys[-1]) == (0, 0, 1, 1)


def test_local_shuffle_keeps_every_value_and_moves_some():
    x = np.arange(2 * 20 * 20 * 10, dtype=np.float32).reshape(2, 20, 20, 10)
    y = local_shuffle(x, np.random.default_rng(0))
    for c in range(2):  # a permutation inside windows: same multiset per channel
        assert np.array_equal(np.sort(y[c].ravel()), np.sort(x[c].ravel()))
    assert (y != x).mean() > 0.01
    # windows are at most a tenth of each side: no value moves further than that
    src = {float(v): np.argwhere(x[0] == v)[0] for v in x[0].ravel()}
    moved = max(np.abs(np.argwhere(y[0] == v)[0] - src[float(v)]).max() for v in y[0].ravel()[:400])
    assert moved <= 2


def test_inpaint_and_outpaint_touch_boxes_only():
    x = np.full((1, 18, 18, 12), 5.0, dtype=np.float32)  # noise lies in [0, 1): any 5.0 voxel was kept
    rng = np.random.default_rng(3)
    y = inpaint(x, rng)
    kept = (y == 5.0).mean()
    assert 0.5 < kept < 1.0  # up to five boxes of 1/6-1/3 per side: at most ~19 % replaced
    z = outpaint(x, rng)
    kept_out = (z == 5.0).mean()
    assert 0.0 < kept_out < 0.6  # only boxes of 3/7-4/7 per side survive
    assert ((z == 5.0) | ((z >= 0) & (z < 1))).all()


def test_corrupt_returns_the_original_as_target_and_is_seeded():
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 8)).astype(np.float32)
    a, t = corrupt(x, np.random.default_rng(42))
    b, _ = corrupt(x, np.random.default_rng(42))
    assert np.array_equal(t, x) and np.array_equal(a, b)
    assert not np.allclose(a, x)
    assert a.min() >= x.min() - 1e-4 and a.max() <= x.max() + 1e-4  # back in the patch's own intensity range


def test_nt_xent_matches_the_formula_worked_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    t = 0.5
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).numpy()
    total = 0.0
    for i, j in [(0, 2), (1, 3), (2, 0), (3, 1)]:
        sims = [z[i] @ z[k] / t for k in range(4) if k != i]
        total += -(z[i] @ z[j] / t) + math.log(sum(math.exp(s) for s in sims))
    assert math.isclose(float(nt_xent(z1, z2, t)), total / 4, rel_tol=1e-5)
    # identical orthogonal views: partner similarity 1/t = 10, the six others 0 -> log(1 + 6 e^-10) each
    far = torch.eye(4) * 10
    assert math.isclose(float(nt_xent(far, far, 0.1)), math.log1p(6 * math.exp(-10)), rel_tol=1e-4)
