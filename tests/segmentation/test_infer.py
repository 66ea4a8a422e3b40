"""Inference pieces against independent references: whole-image forward, explicit flips, exact geometry."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import torch

from medsight.data.preprocess import resample
from medsight.image import Geometry, Image
from medsight.segmentation.postprocess import entropy, to_input_grid
from medsight.segmentation.sliding import sliding_window
from medsight.segmentation.tta import mirror_combinations, mirrored_softmax


def test_sliding_window_of_a_pointwise_model_equals_whole_image_forward():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 1)  # no spatial context: every window must agree with the whole-image result
    x = torch.randn(1, 2, 37, 29, 21)
    with torch.no_grad():
        ref = net(x)
    out = sliding_window(x, net, [16, 16, 16], overlap=0.5)
    assert torch.allclose(out, ref, atol=1e-5)


def test_mirrored_softmax_is_the_mean_over_all_flips():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    x = torch.randn(1, 1, 8, 6, 4)
    assert mirror_combinations([0, 1]) == [(), (0,), (1,), (0, 1)]
    with torch.no_grad():
        manual = sum(torch.flip(torch.softmax(net(torch.flip(x, d)), 1), d) for d in ([], [2], [3], [2, 3])) / 4
        out = mirrored_softmax(net, x, [0, 1])
    assert torch.allclose(out, manual, atol=1e-6)
    assert torch.allclose(out.sum(1), torch.ones(1, 8, 6, 4))


def test_mirrored_softmax_calls_the_network_once_per_flip_with_the_window_batch():
    """Stacking every flip into one call was 20-24 % slower on CPU (docs/benchmarks.md "predict"): each flip of
    the window batch is its own call, and the result still equals the stacked mean."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 2, 3, padding=1)
    batches = []

    def net(t: torch.Tensor) -> torch.Tensor:
        batches.append(t.shape[0])
        return conv(t)

    x = torch.randn(3, 1, 8, 6, 4)
    with torch.no_grad():
        out = mirrored_softmax(net, x, [0, 2])
        flips = [[], [2], [4], [2, 4]]
        stacked = torch.softmax(conv(torch.cat([torch.flip(x, d) for d in flips])), 1)
        manual = sum(torch.flip(stacked[3 * i:3 * i + 3], d) for i, d in enumerate(flips)) / 4
    assert batches == [3, 3, 3, 3]
    assert torch.allclose(out, manual, atol=1e-6)


def test_entropy_bounds_and_value():
    p = np.zeros((4, 2, 1, 1))
    p[:, 0] = 0.25
    p[0, 1] = 1.0
    e = entropy(p)
    assert math.isclose(float(e[0, 0, 0]), math.log(4), rel_tol=1e-5)
    assert abs(float(e[1, 0, 0])) < 1e-5


def test_resample_back_and_forth_restores_shape_and_a_smooth_field():
    i, j, k = np.meshgrid(np.arange(30), np.arange(24), np.arange(18), indexing="ij")
    field = (0.5 * i + 0.25 * j - 0.1 * k).astype(np.float32)[None]
    down = resample(field, (20, 16, 12))
    up = resample(down, (30, 24, 18))
    inner = (slice(None), slice(3, -3), slice(3, -3), slice(3, -3))
    assert np.allclose(up[inner], field[inner], atol=1e-3)  # linear fields survive linear resampling


def test_label_resampling_keeps_classes_and_probabilities_sum_to_one():
    lab = np.zeros((20, 20, 20), dtype=np.int16)
    lab[5:15, 5:15, 5:15] = 1
    lab[8:12, 8:12, 8:12] = 2
    out = resample(lab, (10, 10, 10), is_label=True, n_classes=3)
    assert set(np.unique(out)) == {0, 1, 2}
    prob = np.random.default_rng(0).random((3, 10, 10, 10)).astype(np.float32)
    back = to_input_grid(prob, (20, 20, 20))
    assert back.shape == (3, 20, 20, 20) and np.allclose(back.sum(0), 1, atol=1e-5)


def test_written_label_map_keeps_input_geometry_exactly(tmp_path):
    from medsight.segmentation.predict import Prediction, write_prediction

    angle = 0.3
    c, s = math.cos(angle), math.sin(angle)
    geom = Geometry((0.9, 1.1, 2.5), (-12.0, 40.0, 7.5), ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0)))
    labels = Image(np.random.default_rng(0).integers(0, 3, (11, 9, 7)).astype(np.uint8), geom)
    prob = np.full((3, 11, 9, 7), 1 / 3, dtype=np.float32)
    paths = write_prediction(Prediction(labels, prob, 0.0, 0.0), tmp_path / "p.nii.gz", probabilities=True,
                             uncertainty=True)
    nii = nib.load(str(paths["labels"]))
    assert np.allclose(nii.affine, geom.ras_affine(), atol=1e-5)
    assert int(nii.header["qform_code"]) == 1 and int(nii.header["sform_code"]) == 1
    assert np.array_equal(np.asarray(nii.dataobj), labels.array)
    assert nib.load(str(paths["probabilities"])).shape == (11, 9, 7, 3)
    assert np.allclose(np.asarray(nib.load(str(paths["entropy"])).dataobj), math.log(3), atol=1e-5)
