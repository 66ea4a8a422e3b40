"""2.5D configuration (neighbouring slices as channels), the planner's configuration choice, and class-first
lesion sampling: each checked against values worked out by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from medsight.image import Geometry, Image
from medsight.plan.planner import make_plan
from medsight.segmentation.losses import DeepSupervisionLoss
from medsight.segmentation.sampling import Sample, batch, crop


def _fp(spacings, shapes, labels=None):
    return {"dataset": "x", "spacings": spacings, "shapes": shapes, "channels": {"0": "T1"},
            "labels": labels or {"background": 0, "grey_matter": 1, "white_matter": 2, "lesion": 3},
            "intensity": {"0": {"name": "T1", "mean": 40.0, "std": 10.0, "p00_5": -100.0, "median": 40.0,
                                "p99_5": 200.0}}}


def test_planner_chooses_3d_for_isotropic_and_25d_for_thick_slices() -> None:
    iso = make_plan(_fp([[2.0, 2.0, 2.0]] * 3, [[80, 96, 80]] * 3), memory_gb=0.5, base_filters=8)
    thick = make_plan(_fp([[0.8, 0.8, 5.0]] * 3, [[256, 256, 30]] * 3), memory_gb=0.5, base_filters=8)
    assert iso.default_configuration == "3d" and thick.default_configuration == "2.5d"
    assert any("default configuration 2.5d" in r for r in thick.reasons)
    assert iso.config("2.5d").context_slices == 2 and iso.config("2.5d").spatial_dims == 2
    # lesion labels: half the patches centred on a lesion, half anywhere; inverse-frequency CE
    cfg = iso.config("3d")
    assert cfg.foreground_oversample == 0.5 and cfg.class_sampling == {"1": 0.0, "2": 0.0, "3": 1.0}
    assert cfg.loss == "dice_inverse_ce"
    assert iso.postprocess["lesion_labels"] == {"3": "lesion"}
    assert iso.postprocess["min_lesion_volume_ml"] == pytest.approx(2 * 8 / 1000)  # two 2-mm voxels
    plain = make_plan(_fp([[2.0, 2.0, 2.0]] * 3, [[80, 96, 80]] * 3, {"background": 0, "liver": 1}), memory_gb=0.5)
    assert plain.postprocess == {} and plain.config("3d").class_sampling == {} and plain.config("3d").loss == "dice_ce"


def test_25d_crop_stacks_clamped_neighbour_slices_as_channels() -> None:
    img = np.arange(2 * 6 * 5 * 4, dtype=np.float32).reshape(2, 6, 5, 4)
    lab = np.zeros((6, 5, 4), np.int16)
    lab[..., 0] = 7
    x, y = crop(Sample(img, lab, {}), np.array([3, 2, 0]), [6, 5], dims=2, context=2)
    want = np.concatenate([img[..., k] for k in (0, 0, 0, 1, 2)])  # z = 0: two slices below repeat the edge
    assert x.shape == (10, 6, 5) and np.array_equal(x, want) and (y == 7).all()
    # prediction stacks whole slices the same way as training crops them
    from medsight.segmentation.sampling import slice_stack

    stacked = slice_stack(torch.from_numpy(img).permute(3, 0, 1, 2), 2).numpy()
    for z in range(4):
        x, _ = crop(Sample(img, lab, {}), np.array([3, 2, z]), [6, 5], dims=2, context=2)
        assert np.array_equal(stacked[z], x)


def test_class_first_sampling_gives_the_lesion_its_planned_share() -> None:
    plan = make_plan(_fp([[2.0, 2.0, 2.0]] * 3, [[16, 16, 16]] * 3), memory_gb=0.5, base_filters=8)
    planned = replace(plan.config("3d"), patch_size=[4, 4, 4], batch_size=1, foreground_oversample=1.0)
    cfg = replace(planned, class_sampling={"1": 0.125, "2": 0.125, "3": 0.75})
    samples = []
    for n in range(10):  # one case in ten has a one-voxel lesion
        lab = np.ones((16, 16, 16), np.int16)
        lab[8:, :, :] = 2
        fg = {1: np.argwhere(lab == 1), 2: np.argwhere(lab == 2)}
        if n == 0:
            lab[3, 3, 3] = 3
            fg[3] = np.array([[3, 3, 3]])
        samples.append(Sample(np.zeros((1, 16, 16, 16), np.float32), lab, fg))
    rng = np.random.default_rng(0)
    hits = sum(int((batch(samples, cfg, rng, do_augment=False)[1] == 3).any()) for _ in range(400))
    assert 0.68 < hits / 400 < 0.82  # planned share 0.75 (binomial sd 0.022)
    old = replace(cfg, class_sampling={})
    hits_old = sum(int((batch(samples, old, rng, do_augment=False)[1] == 3).any()) for _ in range(400))
    assert hits_old / 400 < 0.08  # case first: 1/10 cases x 1/3 classes = 0.033
    # the planner's own share: every foreground-centred patch on the lesion
    assert all((batch(samples, planned, rng, do_augment=False)[1] == 3).any() for _ in range(50))


def test_25d_predictor_runs_on_a_volume(tmp_path) -> None:
    from medsight.engine.checkpoint import save_checkpoint
    from medsight.nets.segmentation import build_model
    from medsight.segmentation.predict import Predictor

    plan = make_plan(_fp([[2.0, 2.0, 2.0]] * 3, [[16, 16, 12]] * 3), memory_gb=0.05, base_filters=4)
    cfg = plan.config("2.5d")
    torch.manual_seed(0)
    net = build_model(cfg, 1, 4)
    plan.save(tmp_path / "plan.json")
    (tmp_path / "fold_0").mkdir()
    save_checkpoint(tmp_path / "fold_0/model_final.pt", {"model": net.state_dict(), "config": "2.5d", "fold": 0})
    image = Image(np.random.default_rng(0).normal(size=(16, 16, 12)).astype(np.float32), Geometry.identity(3, (2.0,) * 3))
    pred = Predictor(tmp_path, mirror=False).predict(image)
    assert pred.labels.array.shape == (16, 16, 12) and pred.probabilities.shape == (4, 16, 16, 12)
    assert np.allclose(pred.probabilities.sum(0), 1.0, atol=1e-4)


def test_balanced_cross_entropy_weights_by_inverse_sqrt_frequency() -> None:
    import torch.nn.functional as F
    from monai.losses import DiceLoss


    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, 4)
    target = torch.zeros(2, 1, 6, 6, 4, dtype=torch.long)
    target[:, :, :3] = 1
    target[:, :, 3:5] = 2
    target[0, 0, 5, 0, 0] = 3  # one lesion voxel of 288
    n = np.array([(target == c).sum().item() for c in range(4)], float)
    w = np.clip(np.sqrt(n.max() / n), 1, 30)
    want = (DiceLoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5,
                     include_background=False)(logits, target)
            + F.cross_entropy(logits, target[:, 0], weight=torch.tensor(w, dtype=torch.float32)))
    assert DeepSupervisionLoss(balanced_ce=True)(logits, target).item() == pytest.approx(want.item(), rel=1e-5)
    assert w[3] == pytest.approx(np.sqrt(n[1] / 1))  # the lesion's weight, worked by hand
    # inverse frequency capped at 100 (the planner's lesion loss): 1 lesion voxel against n[1] = 144 -> 100
    w_inv = np.clip(n.max() / n, 1, 100)
    assert w_inv[3] == 100.0 and w_inv[2] == pytest.approx(144 / 96)
    want_inv = (DiceLoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5,
                         include_background=False)(logits, target)
                + F.cross_entropy(logits, target[:, 0], weight=torch.tensor(w_inv, dtype=torch.float32)))
    got = DeepSupervisionLoss(balanced_ce=True, weight_power=1.0, max_weight=100.0)(logits, target)
    assert got.item() == pytest.approx(want_inv.item(), rel=1e-5)


def test_plan_names_its_loss_and_an_unknown_loss_is_a_config_error() -> None:
    from medsight.errors import ConfigError
    from medsight.segmentation.losses import segmentation_loss

    assert segmentation_loss("dice_balanced_ce").loss.__func__ is DeepSupervisionLoss._balanced
    inverse = segmentation_loss("dice_inverse_ce")
    assert (inverse.weight_power, inverse.max_weight) == (1.0, 100.0)
    assert not hasattr(segmentation_loss("dice_ce"), "dice")
    with pytest.raises(ConfigError, match="unknown segmentation loss 'focal'"):
        segmentation_loss("focal")


def test_segmentation_losses_are_built_through_the_registry(monkeypatch) -> None:
    """The planner's ``dice_balanced_ce`` is a registered ``medsight.losses`` entry, and ``segmentation_loss`` looks
    every name up there: a plug-in subclass of DeepSupervisionLoss registered under a new name is what it builds."""
    from medsight.errors import ConfigError
    from medsight.nets import registry
    from medsight.segmentation.losses import dice_balanced_ce, segmentation_loss

    assert {"dice_ce", "dice_balanced_ce"} <= set(registry.available("medsight.losses"))
    assert registry.load("medsight.losses", "dice_balanced_ce") is dice_balanced_ce
    real = registry._entries
    monkeypatch.setattr(registry, "_entries", lambda group: {
        **real(group), "my_dice": ("medsight.segmentation.losses:dice_balanced_ce", "my-plugin", "1.0")})
    built = segmentation_loss("my_dice")
    assert isinstance(built, DeepSupervisionLoss) and hasattr(built, "dice")  # the balanced variant
    with pytest.raises(ConfigError, match="'bce' .* not a segmentation loss"):
        segmentation_loss("bce")
