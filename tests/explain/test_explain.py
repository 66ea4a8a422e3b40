"""Grad-CAM (through MONAI), pointing game, deletion curve and overlays against values worked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medsight.errors import MetricError
from medsight.explain.faithfulness import deletion_curve, pointing_game
from medsight.explain.gradcam import gradcam_maps, to_image_grid
from medsight.explain.overlays import display_size, display_view, overlay_rgb, save_overlay
from medsight.image import Geometry


class _Linear(nn.Module):
    """conv (identity kernel) -> global average -> positive weight: Grad-CAM = relu(input), scaled to [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.fill_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_gradcam_equals_relu_of_activation_by_hand() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8)
    cams = gradcam_maps(_Linear(), x, "conv", class_index=0)
    ref = torch.relu(x[:, 0]).numpy()
    ref = (ref - ref.min(axis=(1, 2), keepdims=True)) / np.ptp(ref, axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(cams, ref, atol=1e-5)  # hottest = largest activation (not MONAI's flipped scale)


def test_gradcam_rejects_unknown_layer() -> None:
    from medsight.errors import ConfigError

    with pytest.raises(ConfigError, match="'nope' is not in the model"):
        gradcam_maps(_Linear(), torch.zeros(1, 1, 4, 4), "nope")


def test_to_image_grid_keeps_constant_and_shape() -> None:
    out = to_image_grid(np.full((4, 4), 0.25, np.float32), (10, 7))
    assert out.shape == (10, 7)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_pointing_game_counts_by_hand() -> None:
    h1 = np.zeros((5, 5)); h1[1, 1] = 1  # inside
    h2 = np.zeros((5, 5)); h2[4, 4] = 1  # outside, 1 px from the mask's corner at (3, 3)
    h3 = np.zeros((5, 5)); h3[0, 4] = 1  # no mask: skipped
    m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
    assert pointing_game([h1, h2, h3], [m, m, np.zeros((5, 5))]) == {"score": 0.5, "hits": 1, "n": 2,
                                                                      "tolerance_px": 0}
    assert pointing_game([h1, h2], [m, m], tolerance=1)["score"] == 0.5  # (4, 4) is sqrt(2) px from (3, 3)
    assert pointing_game([h1, h2], [m, m], tolerance=1.5)["score"] == 1.0
    with pytest.raises(MetricError):
        pointing_game([h3], [np.zeros((5, 5))])


def test_deletion_curve_of_a_sum_model_by_hand() -> None:
    """score = mean of the image; deleting the 2 hottest of 4 pixels (values 4, 3) leaves (2 + 1) / 4."""
    x = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
    heat = np.array([[[4.0, 3.0], [2.0, 1.0]]])
    res = deletion_curve(lambda b: b.mean(dim=(1, 2, 3)).numpy(), x, heat, steps=4)
    np.testing.assert_allclose(res["fractions"], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(res["scores"][0], [2.5, 1.5, 0.75, 0.25, 0.0])
    np.testing.assert_allclose(res["auc"], [np.trapezoid([2.5, 1.5, 0.75, 0.25, 0.0], dx=0.25)])
    rand = deletion_curve(lambda b: b.mean(dim=(1, 2, 3)).numpy(), x, heat, steps=4, seed=0)
    assert rand["scores"][0, 0] == 2.5 and rand["scores"][0, -1] == 0.0


def test_overlay_orientation_and_png(tmp_path: Path) -> None:
    a = np.zeros((4, 3)); a[3, 0] = 1.0  # i = 3 (towards patient right if direction[0][0] < 0), j = 0
    plain = display_view(a)
    assert plain.shape == (3, 4) and plain[0, 3] == 1.0  # rows follow j, columns i
    lps_from_ras = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((-1.0, 0, 0), (0, -1.0, 0), (0, 0, 1.0)))
    radiological = display_view(a, lps_from_ras)
    # anterior (largest j) on top, so j = 0 is the bottom row; patient right (largest i) on the viewer's left
    assert radiological[2, 0] == 1.0
    grey = np.random.default_rng(0).random((4, 3))
    path = save_overlay(tmp_path / "o.png", grey, a, lps_from_ras)
    from PIL import Image

    with Image.open(path) as im:  # display size: 4 x 3 pixels enlarged 128x (ceil(512 / 4)), nearest
        assert im.size == (512, 384) and im.mode == "RGB"
        shown = np.asarray(im)
    small = overlay_rgb(display_view(grey, lps_from_ras), radiological)
    assert np.array_equal(shown[::128, ::128], small)  # each block is the original pixel, exactly
    assert np.array_equal(shown[127::128, 127::128], small) and (shown[:128, :128] == small[0, 0]).all()


def test_display_size_whole_factor_nearest_and_large_images_untouched() -> None:
    labels = np.arange(91 * 109).reshape(91, 109) % 7  # a 2-mm slice's label map
    big = display_size(labels)
    assert big.shape == (455, 545)  # factor ceil(512 / 109) = 5, the smallest that reaches 512
    assert set(np.unique(big)) == set(np.unique(labels))  # no blended label values
    assert np.array_equal(big[2::5, 4::5], labels)
    rgb = np.zeros((600, 40, 3), np.uint8)
    assert display_size(rgb) is rgb or np.shares_memory(display_size(rgb), rgb)  # already display size
    assert display_size(np.zeros((112, 112, 3))).shape == (560, 560, 3)  # a pathology top tile
