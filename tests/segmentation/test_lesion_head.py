"""The separate lesion head (``dice_ce_lesion_head``, segmentation/lesion_head.py) against hand-worked values: the
composed distribution at a voxel with chosen logits, the loss on a 4-voxel patch summed by hand, masked voxels,
and a model folder whose plan has another loss predicting exactly as before (no composition)."""

from __future__ import annotations

import math

import pytest
import torch

from medsight.engine.checkpoint import save_checkpoint
from medsight.errors import ConfigError
from medsight.nets.segmentation import build_model
from medsight.plan.plan import ConfigPlan, Plan
from medsight.segmentation.ensemble import load_models
from medsight.segmentation.lesion_head import (LesionHeadLoss, compose_lesion_head, uses_lesion_head)
from medsight.segmentation.losses import LESION_SHARE, segmentation_loss

EPS = 1e-5  # the losses' smoothing


def test_composed_distribution_by_hand_and_sums_to_one() -> None:
    # tissue logits 0, ln 2, ln 3 -> softmax 1/6, 2/6, 3/6; lesion logit ln 3 -> sigmoid 3/4
    raw = torch.tensor([0.0, math.log(2), math.log(3), math.log(3)], dtype=torch.float64).reshape(1, 4, 1, 1, 1)
    p = torch.softmax(compose_lesion_head(raw, 3), 1).flatten()
    assert p.tolist() == pytest.approx([1 / 24, 2 / 24, 3 / 24, 18 / 24], abs=1e-12)
    torch.manual_seed(0)
    stack = 5 * torch.randn(2, 3, 4, 5, 6, 7, dtype=torch.float64)  # DynUNet's training stack (B, heads, C, *S)
    composed = torch.softmax(compose_lesion_head(stack, 3), 2)
    assert torch.allclose(composed.sum(2), torch.ones(2, 3, 5, 6, 7, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(composed[:, :, 3], torch.sigmoid(stack[:, :, 3]), atol=1e-12)
    assert torch.allclose(composed[:, :, 1], torch.softmax(stack[:, :, :3], 2)[:, :, 1]
                          * (1 - torch.sigmoid(stack[:, :, 3])), atol=1e-12)


def _head_loss() -> LesionHeadLoss:
    loss = segmentation_loss("dice_ce_lesion_head")
    assert isinstance(loss, LesionHeadLoss)
    loss.component_classes = {3}  # as the trainer sets it from the plan's lesion labels
    return loss


def _four_voxels() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels bg, bg, WM, lesion; tissue logits 0 (uniform 1/3); lesion logits 0, 0, 0, ln 3."""
    t = torch.tensor([0, 0, 2, 3]).reshape(1, 1, 1, 1, 4)
    logits = torch.zeros(1, 4, 1, 1, 4, dtype=torch.float64)
    logits[0, 3, 0, 0, 3] = math.log(3)
    return logits, t


def test_head_loss_on_four_voxels_matches_a_hand_computation() -> None:
    logits, t = _four_voxels()
    # tissue: the lesion voxel is masked; CE = ln 3 on the 3 others; q = 1/3 on 3 voxels; Dice GM (absent): 1 - 0 /
    # (1 + 0) = 1, WM (one voxel): 1 - (2/3) / (1 + 1) = 2/3
    tissue = math.log(3) + (1 + 2 / 3) / 2
    # lesion BCE with the demo loss's voxel weights: frequencies bg 1/2, WM 1/4, lesion 1/4 -> class weights 1, 2, 2
    # (the lesion's lesion-wise floor 0.1 * 4 / 1 = 0.4 is lower); p = 1/2 on the 3 negatives, 3/4 on the lesion
    assert LESION_SHARE == 0.1
    bce = (1 * math.log(2) + 1 * math.log(2) + 2 * math.log(2) + 2 * -math.log(3 / 4)) / (1 + 1 + 2 + 2)
    # soft Dice on p = 1/2, 1/2, 1/2, 3/4 against 0, 0, 0, 1: 1 - 2 * 3/4 / (9/4 + 1) = 7/13
    soft_dice = 7 / 13
    assert float(_head_loss()(logits, t)) == pytest.approx(tissue + bce + soft_dice, abs=1e-5)
    # the network hands the loss composed logits: the loss is the same on them (and on a deep-supervision stack)
    assert float(_head_loss()(compose_lesion_head(logits, 3), t)) == pytest.approx(tissue + bce + soft_dice, abs=1e-5)
    stack = torch.stack([logits, logits], 1)
    assert float(_head_loss()(stack, t)) == pytest.approx(tissue + bce + soft_dice, abs=1e-5)


def test_lesion_voxels_contribute_nothing_to_the_tissue_term() -> None:
    logits, t = _four_voxels()
    logits.requires_grad_(True)
    _head_loss()(logits, t).backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad[0, :3, 0, 0, 3]) == 0  # tissue logits of the lesion voxel: no gradient
    assert torch.count_nonzero(logits.grad[0, :3, 0, 0, :3]) > 0
    moved = logits.detach().clone()
    moved[0, :3, 0, 0, 3] = torch.tensor([9.0, -4.0, 2.5], dtype=torch.float64)
    assert float(_head_loss()(moved, t)) == pytest.approx(float(_head_loss()(logits.detach(), t)), abs=1e-12)


def test_a_batch_without_lesion_has_no_soft_dice_term() -> None:
    t = torch.tensor([0, 1, 2, 2]).reshape(1, 1, 1, 1, 4)
    logits = torch.zeros(1, 4, 1, 1, 4, dtype=torch.float64)
    # tissue CE ln 3 on 4 voxels; Dice GM 1 - (2/3)/(4/3 + 1) = 5/7, WM 1 - (4/3)/(4/3 + 2) = 3/5; BCE ln 2 (every
    # voxel has p = 1/2 and is a negative, whatever its weight)
    expected = math.log(3) + (5 / 7 + 3 / 5) / 2 + math.log(2)
    assert float(_head_loss()(logits, t)) == pytest.approx(expected, abs=1e-5)


def test_head_loss_refuses_a_lesion_label_that_is_not_the_last() -> None:
    loss = segmentation_loss("dice_ce_lesion_head")
    loss.component_classes = {2}
    with pytest.raises(ConfigError, match="last"):
        loss(torch.zeros(1, 4, 1, 1, 4), torch.zeros(1, 1, 1, 1, 4, dtype=torch.long))


def _plan(loss: str) -> Plan:
    cfg = ConfigPlan(name="3d", spatial_dims=3, spacing=[1.0] * 3, median_shape=[8] * 3, patch_size=[8] * 3,
                     batch_size=1, filters=[4, 8, 16], kernels=[[3, 3, 3]] * 3, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                     deep_supervision=False, loss=loss)
    return Plan(dataset="t", fingerprint_sha256="0", channels={"0": "T1"}, labels={"bg": 0, "gm": 1, "wm": 2,
                "lesion": 3}, normalisation={}, target_spacing=[1.0] * 3, configurations={"3d": cfg}, memory_gb=0.1,
                postprocess={"lesion_labels": {"3": "lesion"}})


@pytest.mark.parametrize("loss", ["dice_lesionwise_ce", "dice_ce_lesion_head"])
def test_a_model_folder_composes_only_when_its_plan_trains_the_head(tmp_path, loss: str) -> None:
    plan = _plan(loss)
    torch.manual_seed(0)
    raw_net = build_model(plan.config("3d"), 1, 4).eval()
    (tmp_path / "fold_0").mkdir()
    plan.save(tmp_path / "plan.json")
    save_checkpoint(tmp_path / "fold_0" / "model_final.pt", {"model": raw_net.state_dict(), "config": "3d", "fold": 0})
    _, _, (net,) = load_models(tmp_path)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        raw, out = raw_net(x), net(x)
    if uses_lesion_head(loss):
        assert torch.allclose(out, compose_lesion_head(raw, 3), atol=1e-6)
        assert not torch.allclose(torch.softmax(out, 1), torch.softmax(raw, 1), atol=1e-3)
    else:  # a package trained with another loss predicts exactly as before
        assert torch.equal(out, raw)
        assert not net._forward_hooks


def test_onnx_export_keeps_the_composition() -> None:
    pytest.importorskip("onnxruntime")
    from medsight.segmentation.runtime import onnx_forward

    torch.manual_seed(0)
    net = build_model(_plan("dice_ce_lesion_head").config("3d"), 1, 4, lesion_head=True).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    onnx = onnx_forward(net, x)
    with torch.no_grad():
        ref = net(x)
    got = torch.as_tensor(onnx(x))
    assert torch.allclose(got, ref, atol=1e-4)
    assert torch.allclose(torch.softmax(got, 1).sum(1), torch.ones(2, 8, 8, 8), atol=1e-5)
