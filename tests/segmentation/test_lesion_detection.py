"""The lesion detection rule (threshold, minimum volume, minimum score) is fitted on validation lesions, stored in
the package and applied by predict (issue 33 points 2-3 and 6): a faint small lesion that argmax loses is found."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsight.metrics.lesions import case_lesions
from medsight.segmentation.lesion_detection import (DETECTION_FILE, LesionDetection, apply_detection, candidates,
                                                    fit_detection, load_detection, operating_points)
from medsight.segmentation.lesion_study import lesion_study

POST = {"lesion_labels": {"3": "lesion"}, "min_lesion_volume_ml": 0.016,
        "refer_mean_probability_below": 0.6, "refer_mean_entropy_above": 0.6}
VOXEL_ML = 0.008  # 2 mm isotropic


def _case(shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax (4, 16, 16, 16), white matter (p 0.8) everywhere, with a faint 2-voxel reference lesion seen at
    lesion p 0.35 (white matter 0.45: argmax says white matter) and one false spot at lesion p 0.2."""
    prob = np.zeros((4, 16, 16, 16), np.float32)
    prob[2], prob[1] = 0.8, 0.2
    ref = np.full((16, 16, 16), 2, np.int16)
    z = 4 + shift
    ref[z, 4, 4:6] = 3
    prob[:, z, 4, 4:6] = np.array([0.0, 0.2, 0.45, 0.35])[:, None]
    prob[:, 12, 12, 12] = [0.0, 0.2, 0.6, 0.2]
    return prob, ref


def test_faint_small_lesion_found_with_the_fitted_rule_and_not_with_argmax() -> None:
    cases = [(c, *_case(k)) for c, k in zip("abcde", (0, 2, 3, 5, 7))]  # 5 validation lesions (MIN_REF_LESIONS)
    study = lesion_study(lambda image: image, cases, (2.0,) * 3, POST)
    assert study["tp"] == 0  # argmax (the study's own records) misses both lesions
    rule = fit_detection([study["detection"]])
    # by hand: t 0.5/0.4 find nothing; t 0.3 finds both lesions (2 voxels = 0.016 ml, passes every volume up to the
    # plan's 0.016) and no false spot; t <= 0.2 adds the false spot (1 per case, within the bound). Ties go to the
    # rule closest to argmax: lowest filters (score 0, volume 0), highest threshold 0.3
    assert (rule.threshold, rule.min_volume_ml, rule.min_score) == (0.3, 0.0, 0.0)
    assert rule.fit["sensitivity"] == 1.0 and rule.fit["fp_per_case"] == 0.0
    assert rule.fit["argmax"] == {"sensitivity": 0.0, "fp_per_case": 0.0}
    prob, ref = _case(9)  # a case the rule was not fitted on
    found = case_lesions(apply_detection(prob, {3: "lesion"}, rule, VOXEL_ML) == 3, ref == 3, (2.0,) * 3)
    lost = case_lesions(prob.argmax(0) == 3, ref == 3, (2.0,) * 3)
    assert (found.tp, found.fp, lost.tp) == (1, 0, 0)


def test_score_and_volume_filters_give_voxels_back_to_the_next_class() -> None:
    prob, _ = _case()
    prob[:, 12, 12, 12] = [0.0, 0.1, 0.35, 0.55]  # argmax lesion, one voxel, score 0.55
    labels = apply_detection(prob, {3: "lesion"}, LesionDetection(0.5, 0.0, 0.6), VOXEL_ML)
    assert labels[12, 12, 12] == 2 and not (labels == 3).any()  # below min_score: white matter, the next class
    kept = apply_detection(prob, {3: "lesion"}, LesionDetection(0.5, 0.0, 0.5), VOXEL_ML)
    assert kept[12, 12, 12] == 3
    small = apply_detection(prob, {3: "lesion"}, LesionDetection(0.5, 0.009, 0.0), VOXEL_ML)  # 1 voxel < 0.009 ml
    assert not (small == 3).any()


def test_operating_points_equal_case_lesions_on_the_applied_rule() -> None:
    """The grid's counts (one IoU matrix per threshold) against the library's matching of each rule's label map."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, (4, 14, 14, 14))
    logits[3] += np.where(rng.random((14, 14, 14)) < 0.05, 2.5, -1.0)
    prob = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    ref = np.zeros((14, 14, 14), np.int16)
    ref[2:5, 2:5, 2:5] = 3
    ref[9, 9, 9] = 3
    ref[10:13, 3:5, 8:10] = 3
    rules = candidates(0.016)
    n_ref, points = operating_points(prob, ref, 3, VOXEL_ML, rules)
    assert n_ref == 3
    for rule, (tp, fp) in zip(rules, points):
        c = case_lesions(apply_detection(prob, {3: "lesion"}, LesionDetection(*rule), VOXEL_ML) == 3, ref == 3,
                         (2.0,) * 3)
        assert (tp, fp) == (c.tp, c.fp), rule
    assert len({p for p in points}) > 3  # the rules differ on this volume: the comparison is not vacuous


def test_fit_takes_the_most_sensitive_rule_within_one_false_lesion_per_case() -> None:
    rules = [[0.5, 0.0, 0.0], [0.3, 0.0, 0.0], [0.3, 0.0, 0.8], [0.1, 0.0, 0.8]]
    table = {"rules": rules, "tp": [6, 9, 8, 10], "fp": [3, 25, 5, 11], "n_ref": 10, "n_cases": 10}
    rule = fit_detection([table, table])  # pooled: 20 cases, FP per case 0.3, 2.5, 0.5, 1.1
    assert (rule.threshold, rule.min_score) == (0.3, 0.8)  # 0.8 sensitivity at 0.5 FP/case; 0.1 exceeds the bound
    assert rule.fit["sensitivity"] == pytest.approx(0.8) and rule.fit["fp_per_case"] == pytest.approx(0.5)
    none_ok = fit_detection([{**table, "fp": [30, 40, 25, 50]}])  # no rule within the bound: fewest false lesions
    assert (none_ok.threshold, none_ok.min_score, none_ok.fit["met_fp_bound"]) == (0.3, 0.8, False)
    assert fit_detection([{**table, "n_ref": 2}, {**table, "n_ref": 2}]) is None  # 4 validation lesions: too few


def test_package_stores_the_rule_and_its_validation_figures(tmp_path) -> None:
    from medsight.plan.planner import make_plan
    from medsight.segmentation.package import package_segmentation

    cases = [(c, *_case(k)) for c, k in zip("abcde", (0, 2, 3, 5, 7))]
    study = lesion_study(lambda image: image, cases, (2.0,) * 3, POST)
    train = tmp_path / "model.training"
    (train / "fold_0").mkdir(parents=True)
    plan = make_plan({"dataset": "x", "spacings": [[2.0] * 3] * 3, "shapes": [[32] * 3] * 3, "channels": {"0": "T1"},
                      "labels": {"background": 0, "grey_matter": 1, "white_matter": 2, "lesion": 3},
                      "intensity": {"0": {"name": "T1", "mean": 40.0, "std": 10.0, "p00_5": -100.0, "median": 40.0,
                                          "p99_5": 200.0}}}, memory_gb=0.05, base_filters=4)
    plan.postprocess = dict(POST)
    plan.save(train / "plan.json")
    (train / "fold_0" / "model_final.pt").write_bytes(b"weights")
    (train / "fold_0" / "summary.json").write_text(json.dumps({"lesion_study": study}))
    pkg = package_segmentation(train, tmp_path / "model", name="t", targets={"val_lesion_sensitivity": 0.8})
    rule = load_detection(pkg.path)
    assert (rule.threshold, rule.min_score) == (0.3, 0.0)
    assert json.loads((pkg.path / DETECTION_FILE).read_text())["fit"]["unit"] == "validation lesion"
    m = pkg.extra["metrics"]
    assert m["val_lesion_sensitivity"] == 1.0 and m["val_lesion_sensitivity_argmax"] == 0.0
    assert pkg.extra["validation_target"]["met"] is True  # judged on the rule predict applies
    assert load_detection(tmp_path) is None  # no file: predict keeps argmax


def test_lesionwise_loss_gives_a_one_voxel_lesion_its_share_of_the_cross_entropy() -> None:
    import torch
    import torch.nn.functional as F

    from medsight.segmentation.losses import LESION_SHARE, segmentation_loss

    t = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    t[:, :, :, :, :4] = 2  # white matter: half of every patch, one component per patch
    t[0, 0, 1, 1, 6] = 3  # a one-voxel lesion
    t[1, 0, 4:8, 4:8, 4:8] = 3  # a 64-voxel lesion
    t[1, 0, 0, 0, 7] = 2  # a one-voxel white-matter fragment (a tissue cut by the patch border)
    loss = segmentation_loss("dice_lesionwise_ce")
    loss.component_classes = {3}  # as the trainer sets it from the plan's lesion labels
    counts = torch.bincount(t.reshape(-1), minlength=4).double()  # 1024 voxels in all
    w = (counts.max() / counts).clamp(1.0, 100.0)  # inverse frequency, capped, as dice_inverse_ce
    vw = loss._component_weights(t, t[:, 0], w.float())
    n = t.numel()
    assert vw[0, 1, 1, 6].item() == pytest.approx(LESION_SHARE * n)  # 102.4: above the class weight
    assert vw[1, 5, 5, 5].item() == pytest.approx(max(w[3].item(), LESION_SHARE * n / 64))
    assert vw[0, 0, 0, 0].item() == pytest.approx(w[2].item())  # 256-voxel white matter: its class weight
    assert vw[1, 0, 0, 7].item() == pytest.approx(w[2].item())  # a tissue fragment is not weighted as a lesion
    loss.component_classes = None
    assert loss._component_weights(t.clone(), t[:, 0], w.float())[1, 0, 0, 7].item() == pytest.approx(LESION_SHARE * n)
    loss.component_classes = {3}
    logits = torch.randn(2, 4, 8, 8, 8)
    ce = F.cross_entropy(logits, t[:, 0], reduction="none")
    expected = loss.dice(logits, t) + (ce * vw).sum() / vw.sum()
    assert loss(logits, t).item() == pytest.approx(expected.item(), rel=1e-5)
    plain = segmentation_loss("dice_inverse_ce")(logits, t)  # the lesion-wise weights change the loss
    assert abs(plain.item() - expected.item()) > 1e-3
