"""The cost-aware inference study (window overlap x mirror axes): window counts worked by hand and against MONAI's
own slicing, the study's Dice table on hand-made probabilities, the chooser on a hand-made table, the folds'
combination (and old studies), and predict's overlap: the package's, an explicit one, or 0.5 for old packages."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from medsight.segmentation.tta_study import (DICE_TOLERANCE, choose, combine_fold_studies, flip_sets,
                                             inference_study, row_flips, window_count, window_starts)


def test_window_counts_by_hand():
    # demo plan: patch [32, 48, 40] on [79, 97, 81]. Overlap 0.5: steps 16, 24, 20 -> ceil(47/16)+1 = 4,
    # ceil(49/24)+1 = 4, ceil(41/20)+1 = 4 -> 64. Overlap 0.25: steps 24, 36, 30 -> 3 each; overlap 0: 3 each -> 27.
    assert window_count([79, 97, 81], [32, 48, 40], 0.5) == 64
    assert window_count([79, 97, 81], [32, 48, 40], 0.25) == 27
    assert window_count([79, 97, 81], [32, 48, 40], 0.0) == 27
    assert window_starts([79], [32], 0.25) == [[0, 24, 47]] and window_starts([79], [32], 0.0) == [[0, 32, 47]]
    # CT plan: patch [80, 80, 32] on [108, 108, 48]: 2 x 2 x 2 at every overlap, and the same layout
    assert {window_count([108, 108, 48], [80, 80, 32], o) for o in (0.5, 0.25, 0.0)} == {8}
    assert window_starts([108, 108, 48], [80, 80, 32], 0.5) == window_starts([108, 108, 48], [80, 80, 32], 0.0)
    assert window_count([20, 10, 5], [32, 48, 40], 0.5) == 1  # smaller than the patch: padded, one window


@pytest.mark.parametrize("shape,patch,overlap", [((79, 97, 81), (32, 48, 40), 0.5), ((50, 33, 7), (16, 16, 8), 0.25),
                                                 ((64, 64, 64), (32, 32, 32), 0.0), ((41, 40), (40, 40), 0.75)])
def test_window_starts_equal_monais_slicing(shape, patch, overlap):
    size = tuple(max(s, p) for s, p in zip(shape, patch))
    slices = dense_patch_slices(size, patch, _get_scan_interval(size, patch, len(shape), [overlap] * len(shape)))
    starts = window_starts(shape, patch, overlap)
    assert len(slices) == window_count(shape, patch, overlap)
    assert [sorted({s[d].start for s in slices}) for d in range(len(shape))] == starts


def _fg(values: list[float]) -> np.ndarray:
    fg = np.asarray(values, dtype=float).reshape(-1, 1, 1)
    return np.stack([1 - fg, fg])


def test_study_table_averages_flips_shares_equal_layouts_and_counts_passes():
    label_a, label_b = np.array([1] * 4 + [0] * 4).reshape(8, 1, 1), np.array([1, 1, 0, 0]).reshape(4, 1, 1)
    fg_a = {0.5: ([.9] * 4 + [.1] * 4, [.9] * 4 + [.1] * 4),  # Dice 1, averaged with the flip 1
            0.25: ([.9, .9, .4, .4] + [.1] * 4, [.9] * 4 + [.1] * 4),  # 2 of 4 found: 2*2/6 = 2/3; averaged: 1
            0.0: ([.4] * 8, [.4] * 8)}  # nothing found: 0 both
    fg_b = ([.6, .4, .4, .4], [.6, .8, .2, .2])  # 2/3; averaged [.6, .6, .3, .3]: 1
    calls = []

    def probabilities(image, overlap, combo):
        calls.append((image.shape[1], overlap, combo))
        return _fg((fg_a[overlap] if image.shape[1] == 8 else fg_b)[len(combo)])

    cases = [(np.zeros((1, 8, 1, 1)), label_a), (np.zeros((1, 4, 1, 1)), label_b)]
    study = inference_study(probabilities, cases, [0], 2, [4, 1, 1], 3)
    # case A (8 voxels, patch 4): starts [0,2,4] / [0,3,4] / [0,4]: 3 layouts; case B (4 voxels): 1 window, 1 layout
    assert len(calls) == 3 * 2 + 2 and all(o == 0.5 for s, o, _ in calls if s == 4)
    rows = {(r["overlap"], () if r["flips"] == [[]] else (0,)): r for r in study["table"]}
    assert len(rows) == len(study["table"]) == 6 and all(r["flips"] in ([[]], [[], [0]]) for r in study["table"])
    # pooled over the cases: [2 x overlap, predicted + reference voxels] summed. (0.5, none): A 8/8, B 2/3 -> 10/11;
    # (0.5, [0]): 8/8 + 4/4; (0.25, none): A 4/6 + B 2/3 -> 6/9; (0, none): A 0/4 + B 2/3 -> 2/7; (0, [0]): 4/8
    expected = {(0.5, ()): 10 / 11, (0.5, (0,)): 1.0, (0.25, ()): 6 / 9, (0.25, (0,)): 1.0,
                (0.0, ()): 2 / 7, (0.0, (0,)): 0.5}
    assert {k: r["dice"] for k, r in rows.items()} == pytest.approx(expected)
    assert rows[(0.0, ())]["counts"] == [[2.0, 7.0]] and rows[(0.0, ())]["dice_by_class"] == [pytest.approx(2 / 7)]
    assert [rows[(o, ())]["windows"] for o in (0.5, 0.25, 0.0)] == [3 + 1, 3 + 1, 2 + 1]
    assert rows[(0.0, (0,))]["passes"] == 6
    assert study["gain_by_axis"] == {"0": pytest.approx(1 - 10 / 11)} and study["n_cases"] == 2
    # within 0.005 of the reference (1.0): (0.5, [0]) and (0.25, [0]), both 8 passes / 4 = 2.0: tie -> overlap 0.5
    assert study["chosen"] == {"overlap": 0.5, "mirror_axes": [0], "flips": [[], [0]]}


def _table(dice: dict[tuple[float, tuple[int, ...]], float], windows: dict[float, int]) -> list[dict]:
    return [{"overlap": o, "axes": list(a), "dice": d, "windows": windows[o], "passes": windows[o] * 2 ** len(a)}
            for (o, a), d in dice.items()]


DICE = {(0.5, ()): .800, (0.5, (0,)): .805, (0.5, (1,)): .790, (0.5, (2,)): .810, (0.5, (0, 2)): .812,
        (0.5, (0, 1, 2)): .813,
        (0.25, ()): .805, (0.25, (2,)): .809, (0.25, (0, 2)): .810, (0.25, (0, 1, 2)): .811,
        (0.0, ()): .800, (0.0, (2,)): .8095, (0.0, (0, 2)): .811, (0.0, (0, 1, 2)): .812}
WINDOWS = {0.5: 64, 0.25: 27, 0.0: 27}  # the demo plan's counts


def test_chooser_takes_the_cheapest_candidate_within_the_tolerance():
    c = choose({"table": _table(DICE, WINDOWS), "axes": [0, 1, 2], "n_cases": 4})
    assert c["axis_order"] == [2, 0, 1]  # single-axis gains at 0.5: +0.010, +0.005, -0.010
    # floor 0.813 - 0.005 = 0.808; no mirroring (27/64) loses too much; axis 2 at 0.25 and at 0 both cost
    # 54/64 = 0.84375 and pass: the tie goes to the higher Dice (0.8095 at overlap 0)
    assert (c["overlap"], c["mirror_axes"], c["cost"]) == (0.0, [2], pytest.approx(54 / 64))
    assert c["flips"] == [[], [2]]  # an old table's axis subset: all its flips
    assert c["reference"] == {"overlap": 0.5, "mirror_axes": [0, 1, 2], "dice": .813,
                              "flips": [[], [0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2]]}
    assert c["n_candidates"] == 14 and c["tolerance"] == DICE_TOLERANCE
    ref = next(x for x in c["candidates"] if x["overlap"] == 0.5 and len(x["flips"]) == 8)
    assert ref["cost"] == 8.0 and ref["dice_vs_reference"] == 0.0
    wide = choose({"table": _table(DICE, WINDOWS), "axes": [0, 1, 2], "n_cases": 4}, tolerance=0.01)
    assert (wide["overlap"], wide["mirror_axes"]) == (0.25, [])  # 0.805 beats 0.800 at the same 27/64
    strict = choose({"table": _table(DICE, WINDOWS), "axes": [0, 1, 2], "n_cases": 4}, tolerance=0.0)
    assert (strict["overlap"], strict["mirror_axes"]) == (0.5, [0, 1, 2])  # only the reference itself


def test_every_class_must_stay_within_the_tolerance():
    """A lesion gain must not pay for a tissue loss: per-class Dice decides when the table has it."""
    ref = {"overlap": 0.5, "axes": [0], "dice": .85, "dice_by_class": [.88, .82], "windows": 64, "passes": 128}
    gain_pays = {"overlap": 0.25, "axes": [], "dice": .87, "dice_by_class": [.87, .87], "windows": 27, "passes": 27}
    equal = {"overlap": 0.25, "axes": [0], "dice": .848, "dice_by_class": [.876, .82], "windows": 27, "passes": 54}
    none = {"overlap": 0.5, "axes": [], "dice": .84, "dice_by_class": [.88, .80], "windows": 64, "passes": 64}
    c = choose({"table": [ref, gain_pays, equal, none], "axes": [0], "n_cases": 4})
    # mean Dice would take 'gain_pays' (0.87 >= 0.845, cost 27/64); class 1 loses 0.01 there -> 'equal' (54/64)
    assert (c["overlap"], c["mirror_axes"], c["cost"]) == (0.25, [0], pytest.approx(54 / 64))
    assert c["reference"]["dice_by_class"] == [.88, .82]


def test_folds_combine_weighted_by_cases_and_old_studies_keep_working():
    a = {"n_cases": 3, "axes": [0, 1, 2], "table": _table(DICE, WINDOWS)}
    worse = {k: v - (0.02 if k == (0.0, (2,)) else 0.0) for k, v in DICE.items()}
    b = {"n_cases": 1, "axes": [0, 1, 2], "table": _table(worse, WINDOWS)}
    c = combine_fold_studies([a, b])
    cand = {(x["overlap"], row_flips(x)): x for x in c["candidates"]}
    assert cand[(0.0, ((), (2,)))]["dice"] == pytest.approx((3 * .8095 + .7895) / 4)  # 0.8045 < 0.808: out
    assert cand[(0.0, ((), (2,)))]["cost"] == pytest.approx(108 / 128)
    assert (c["overlap"], c["mirror_axes"], c["n_cases"], c["folds"]) == (0.25, [2], 4, 2)
    pooled = combine_fold_studies([  # folds with counts: voxels pooled, not Dice averaged
        {"n_cases": 1, "axes": [], "table": [{"overlap": 0.5, "axes": [], "dice": 1.0, "windows": 2, "passes": 2,
                                              "counts": [[10.0, 10.0]]}]},
        {"n_cases": 3, "axes": [], "table": [{"overlap": 0.5, "axes": [], "dice": 0.0, "windows": 6, "passes": 6,
                                              "counts": [[0.0, 90.0]]}]}])
    assert pooled["dice"] == pytest.approx(10 / 100) and pooled["cost"] == 1.0  # case-weighted mean would be 0.25
    assert pooled["candidates"][0]["dice_by_class"] == [pytest.approx(0.1)]
    old = combine_fold_studies([{"n_cases": 2, "gain_by_axis": {"0": 0.002, "1": 0.0, "2": 0.004}}])
    assert old["mirror_axes"] == [0, 2] and "overlap" not in old
    assert combine_fold_studies([{"n_cases": 0, "axes": [0], "table": []}]) is None


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    import medsight.segmentation.predict as predict

    plan = SimpleNamespace(channels=["ct"], postprocess={}, labels={"background": 0, "organ": 1})
    cfg = SimpleNamespace(mirror_axes=[0, 1, 2], spatial_dims=3, context_slices=0, patch_size=[4, 4, 4])
    monkeypatch.setattr(predict, "load_models", lambda d, f=None, network=None: (plan, cfg, [torch.nn.Identity()]))
    monkeypatch.setattr(predict, "load_policy", lambda d, p: None)
    return tmp_path


def test_predictor_overlap_from_the_package_explicit_or_old(fake_package):
    from medsight.segmentation.predict import Predictor

    old = Predictor(fake_package)  # no inference.json
    assert (old.overlap, old.overlap_source, old.mirror_axes) == (0.5, "default", [])
    (fake_package / "inference.json").write_text(json.dumps({"mirror_axes": [0, 2], "min_gain": 0.001}))  # old
    old = Predictor(fake_package)
    assert (old.overlap, old.overlap_source, old.mirror_axes) == (0.5, "default", [0, 2])
    (fake_package / "inference.json").write_text(json.dumps({"mirror_axes": [2], "overlap": 0.0}))
    new = Predictor(fake_package)
    assert (new.overlap, new.overlap_source, new.mirror_axes) == (0.0, "measured at training", [2])
    assert Predictor(fake_package, overlap=0.25).overlap == 0.25  # explicit wins
    full = Predictor(fake_package, mirror_axes="all")  # the user's own mirroring: the standard overlap
    assert (full.overlap, full.mirror_axes) == (0.5, [0, 1, 2])
    assert Predictor(fake_package, mirror=False).overlap == 0.5
    from medsight.errors import ConfigError

    with pytest.raises(ConfigError, match="overlap"):
        Predictor(fake_package, overlap=1.0)


def test_predict_passes_the_packages_overlap_to_the_sliding_window(fake_package, monkeypatch):
    import medsight.segmentation.predict as predict

    (fake_package / "inference.json").write_text(json.dumps({"mirror_axes": [], "overlap": 0.25}))
    p = predict.Predictor(fake_package)
    monkeypatch.setattr(predict, "preprocess_image", lambda im, plan, cfg: SimpleNamespace(image=None))

    def stop(models, image, cfg, axes, overlap, **kw):
        raise RuntimeError(f"overlap {overlap} axes {axes}")

    monkeypatch.setattr(predict, "plan_grid_probabilities", stop)
    with pytest.raises(RuntimeError, match=r"overlap 0.25 axes \[\]"):
        p.predict(None)


@pytest.mark.parametrize("overlap", [0.5, 0.25, 0.0])
def test_the_sliding_window_runs_exactly_the_counted_windows(overlap):
    from medsight.segmentation.predict import plan_grid_probabilities

    conv, batches = torch.nn.Conv3d(1, 2, 1), []

    def net(t):
        batches.append(t.shape[0])
        return conv(t)

    cfg = SimpleNamespace(spatial_dims=3, context_slices=0, patch_size=[8, 12, 10])
    image = np.random.default_rng(0).normal(size=(1, 20, 25, 21)).astype(np.float32)
    plan_grid_probabilities([net], image, cfg, [2], overlap, window_batch=1)
    assert sum(batches) == 2 * window_count([20, 25, 21], [8, 12, 10], overlap)  # 2 flips per window
