"""Sets of flips as the inference study's candidates: the candidate list, a set's averaged softmax and its counted
cost worked by hand, the choice of a set that no axis subset gives, and predict running exactly the recorded flips
(packages that record mirror axes only: every combination of them, exactly as before)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medsight.segmentation.tta import mirror_combinations
from medsight.segmentation.tta_study import choose, flip_sets, overlap_counts


def test_flip_sets_identity_plus_up_to_three_flips_and_the_axis_subsets():
    sets = flip_sets([0, 1, 2])
    assert len(sets) == 1 + 7 + 21 + 35 + 1 and len(set(sets)) == len(sets)  # + full mirroring (8 flips)
    assert all(s[0] == () for s in sets) and sets[0] == ((),) and ((), (2,), (0, 2)) in sets
    assert sets[-1] == tuple(mirror_combinations([0, 1, 2]))
    assert len(flip_sets([0, 1])) == 8  # every set holding the identity: 2^3
    # identity + one flip (8 sets), then the axis pairs' 4 flips (3) and all 8 flips (1)
    assert len(flip_sets([0, 1, 2], max_flips=2)) == 8 + 3 + 1


def test_overlap_counts_by_hand():
    prob = np.eye(3)[np.array([0, 1, 1, 2, 2, 0])].T  # argmax [0, 1, 1, 2, 2, 0]
    ref = np.array([0, 1, 0, 2, 7, 2])  # 7: no class of this model
    # class 1: overlap 1, predicted 2 + reference 1; class 2: overlap 1, predicted 2 + reference 2
    assert overlap_counts(prob, ref, 3).tolist() == [[2, 3], [2, 4]]


# foreground probability of each flip combination of axes [0, 1] on an 8-voxel case (label: the first 2 voxels)
FG = {(): [.6, .4, .4, .4], (0,): [.6, .8, .2, .2], (1,): [.2, .35, .8, .1], (0, 1): [.9, .9, .1, .1]}
FG_AT_0 = {**FG, (0,): [.6, .45, .2, .2]}  # overlap 0: flip (0,) finds only the first voxel


def test_study_scores_every_flip_set_and_chooses_one_no_axis_subset_gives():
    calls = []

    def probabilities(image, overlap, combo):
        calls.append((overlap, combo))
        fg = np.array((FG if overlap == 0.5 else FG_AT_0)[combo] + [.1] * 4).reshape(8, 1, 1)
        return np.stack([1 - fg, fg])

    from medsight.segmentation.tta_study import inference_study

    label = np.array([1, 1] + [0] * 6).reshape(8, 1, 1)
    study = inference_study(probabilities, [(np.zeros((1, 8, 1, 1)), label)], [0, 1], 2, [4, 1, 1], 3,
                            overlaps=(0.5, 0.0))
    assert len(calls) == 2 * 4  # each flip once per window layout; every set is an average of these
    rows = {(r["overlap"], tuple(tuple(f) for f in r["flips"])): r for r in study["table"]}
    assert len(rows) == 2 * 8
    # means at 0.5 (first 4 voxels; the rest 0.1): {()}: [.6,.4,.4,.4] -> voxel 0 only: 2*1/(1+2)
    # {(), (1,)}: [.4,.375,.6,.25] -> voxel 2 only: 0; {(), (0,), (1,)}: [.467,.517,.467,.233] -> voxel 1: 2/3
    # {(), (0, 1)}: [.75,.65,.25,.25] -> 1; at overlap 0 {(), (0,)}: [.6,.425,..] -> 2/3
    assert rows[(0.5, ((),))]["dice"] == pytest.approx(2 / 3)
    assert rows[(0.5, ((), (1,)))]["counts"] == [[0.0, 3.0]] and rows[(0.5, ((), (1,)))]["dice"] == 0.0
    assert rows[(0.5, ((), (0,), (1,)))]["dice"] == pytest.approx(2 / 3)
    assert rows[(0.5, ((), (0,)))]["dice"] == 1.0 and rows[(0.0, ((), (0,)))]["dice"] == pytest.approx(2 / 3)
    assert rows[(0.0, ((), (0, 1)))]["dice"] == 1.0
    # 8 voxels, patch 4: 3 windows at 0.5 (starts 0, 2, 4), 2 at 0 (0, 4); passes = windows x flips
    assert rows[(0.0, ((), (0, 1)))]["windows"] == 2 and rows[(0.0, ((), (0, 1)))]["passes"] == 4
    assert rows[(0.5, ((), (0,), (1,), (0, 1)))]["passes"] == 12
    # cheapest with Dice 1 (the reference's): {(), (0, 1)} at overlap 0, 4 / 3 passes of one at 0.5; the old
    # axis-subset candidates' cheapest was axis 0 at overlap 0.5 (2 passes per window: cost 2)
    assert study["chosen"] == {"overlap": 0.0, "flips": [[], [0, 1]], "mirror_axes": [0, 1]}
    c = choose(study)
    assert c["cost"] == pytest.approx(4 / 3) and c["n_candidates"] == 16 and c["n_within"] == 9
    # kept: per (overlap, number of flips) the best margin: 2 overlaps x 4 sizes, the choice and reference among them
    assert len(c["candidates"]) == 8
    assert [x["cost"] for x in c["candidates"]] == sorted(x["cost"] for x in c["candidates"])
    kept = {(x["overlap"], len(x["flips"])): x for x in c["candidates"]}
    assert kept[(0.0, 2)]["flips"] == [[], [0, 1]] and kept[(0.0, 2)]["within"]
    assert kept[(0.5, 1)]["margin"] == pytest.approx(2 / 3 - 1) and not kept[(0.5, 1)]["within"]


@pytest.fixture
def conv_package(tmp_path, monkeypatch):
    import medsight.segmentation.predict as predict

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    plan = SimpleNamespace(channels=["mr"], postprocess={}, labels={"background": 0, "organ": 1})
    cfg = SimpleNamespace(mirror_axes=[0, 1, 2], spatial_dims=3, context_slices=0, patch_size=[6, 6, 6])
    monkeypatch.setattr(predict, "load_models", lambda d, f=None, network=None: (plan, cfg, [net]))
    monkeypatch.setattr(predict, "load_policy", lambda d, p: None)
    return tmp_path, net, cfg


def _run(p, image):
    from medsight.segmentation.predict import plan_grid_probabilities

    with torch.no_grad():
        return plan_grid_probabilities(p.forwards, image, p.cfg, p.mirror_axes, p.overlap, combos=p.flips,
                                       window_batch=p.window_batch)[0]


def test_old_packages_predict_exactly_as_before(conv_package):
    """mirror_axes only (no flips): every combination of those axes, bit for bit what predict computed before flip
    sets (mirrored_softmax over the axes, no explicit combinations)."""
    from medsight.segmentation.predict import Predictor, plan_grid_probabilities

    model_dir, net, cfg = conv_package
    (model_dir / "inference.json").write_text(json.dumps({"mirror_axes": [0, 2], "overlap": 0.25}))
    p = Predictor(model_dir)
    assert p.flips == [(), (0,), (2,), (0, 2)] and p.mirror_axes == [0, 2] and p.overlap == 0.25
    image = np.random.default_rng(0).normal(size=(1, 11, 9, 10)).astype(np.float32)
    with torch.no_grad():
        before = plan_grid_probabilities(p.forwards, image, cfg, [0, 2], 0.25, window_batch=p.window_batch)[0]
    assert torch.equal(_run(p, image), before)
    assert Predictor(model_dir, mirror=False).flips == [()]
    assert Predictor(model_dir, mirror_axes="all").flips == mirror_combinations([0, 1, 2])


def test_a_recorded_flip_set_runs_exactly_those_flips(conv_package):
    from medsight.segmentation.predict import Predictor

    model_dir, net, cfg = conv_package
    (model_dir / "inference.json").write_text(json.dumps({"mirror_axes": [0, 2], "flips": [[], [2], [0, 2]],
                                                          "overlap": 0.0}))
    p = Predictor(model_dir)
    assert p.flips == [(), (2,), (0, 2)] and p.mirror_axes == [0, 2] and p.overlap == 0.0
    calls = []
    p.forwards = [lambda t: calls.append(t.shape[0]) or net(t)]
    image = np.random.default_rng(1).normal(size=(1, 6, 6, 6)).astype(np.float32)  # one window
    out = _run(p, image)
    assert calls == [1, 1, 1]  # one network call per flip
    x = torch.from_numpy(image)[None]
    with torch.no_grad():
        manual = sum(torch.flip(torch.softmax(net(torch.flip(x, d)), 1), d) for d in ([], [4], [2, 4])) / 3
    assert torch.allclose(out, manual[0], atol=1e-6)
    assert Predictor(model_dir, mirror_axes=[2]).flips == [(), (2,)]  # explicit axes: all their combinations


def test_explicit_flips_win_and_take_overlap_one_half(conv_package):
    from medsight.segmentation.predict import Predictor

    model_dir, net, cfg = conv_package
    (model_dir / "inference.json").write_text(json.dumps({"mirror_axes": [0], "flips": [[], [0]], "overlap": 0.0}))
    p = Predictor(model_dir, flips=[[], [1, 2]])
    assert (p.flips, p.mirror_axes, p.overlap) == ([(), (1, 2)], [1, 2], 0.5)
    assert Predictor(model_dir, flips=[[]], overlap=0.25).overlap == 0.25
