"""Regression test for the demo classifier's collapse (issue 33): on some machines and thread counts the old recipe
(evidence map from a random head, no mask guidance) sat at the prior for all 30 epochs (validation AUC ~0.5).

Reduced form of the demo: the demo's 200-volume plan, but training on its first 30 training patients for 8 epochs
(~130 steps) on one torch thread (only those and the 12 validation patients' cases are built). Measured (seed 0):
the recipe reaches validation AUC 0.96 by epoch 7; the old recipe stays at 0.44-0.53 for all 8 epochs
(docs/benchmarks.md "robustness"). A 24-volume set was tried and does not tell
them apart (both 0.6-0.7 at best: too few lesions), hence the demo's own volumes. The inside loss itself is checked
by hand on a 2 x 2 map."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from medsight.classification.localisation import inside_loss


def test_inside_loss_by_hand() -> None:
    e = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[9.0, 9.0], [9.0, 9.0]]]])
    cover = torch.tensor([[[[0.0, 0.5], [0.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])  # 2nd image: no finding
    pooled = (math.log(0.5 * math.exp(8.0) + math.exp(16.0)) - math.log(1.5)) / 4.0
    want = math.log1p(math.exp(-pooled))  # BCE with target 1 = softplus(-z)
    assert float(inside_loss(e, cover, 4.0)) == pytest.approx(want, rel=1e-6)
    assert float(inside_loss(e, cover, 0.0)) == pytest.approx(math.log1p(math.exp(-4.0)), rel=1e-6)  # hard max
    e.requires_grad_(True)
    inside_loss(e, cover, 4.0).backward()
    assert e.grad[0, 0, 0, 0] == 0 and e.grad[0, 0, 1, 0] == 0 and float(e.grad[1].abs().sum()) == 0  # only inside
    assert e.grad[0, 0, 1, 1] < e.grad[0, 0, 0, 1] < 0  # both covered cells pushed up, the fuller one more


# The reduced set: the first 30 training and the first 12 validation patients (sorted ids) of the demo's seed-0
# split (with_splits) of its 200 volumes. Only their 51 cases are built (build_demo_dataset(patients=...): each case
# has its own seeds, so the same bytes as in the whole build; the split itself needs all 200 cases' slices, hence
# the ids written out). Checked 2026-12-07: the training table was byte-identical to the one cut from the whole
# build, and the run gave the benchmark's validation AUCs to 3 decimals (0.486 ... 0.960); the build of all 200
# volumes was 3/4 of this test's CPU time.
TRAIN_PATIENTS = ("P0001 P0002 P0003 P0006 P0007 P0009 P0010 P0011 P0012 P0013 P0014 P0016 P0018 P0019 P0023 "
                  "P0024 P0025 P0026 P0028 P0029 P0031 P0034 P0035 P0036 P0041 P0042 P0043 P0045 P0046 P0047").split()
VAL_PATIENTS = "P0015 P0020 P0027 P0032 P0033 P0039 P0040 P0044 P0053 P0058 P0064 P0066".split()


@pytest.mark.slow
def test_demo_recipe_leaves_chance_within_eight_epochs_on_one_thread(tmp_path: Path) -> None:
    from medsight.classification.train import train_classifier
    from medsight.demo.classification import CLS_LESION_PROFILE, CLS_LESION_SHARE, N_CASES, demo_config
    from medsight.synthetic.demo_cls import build_demo_cls_dataset

    torch.set_num_threads(1)
    manifest = build_demo_cls_dataset(tmp_path / "data", n_cases=N_CASES, seed=0, quiet=True,
                                      lesion_share=CLS_LESION_SHARE, lesion_profile=CLS_LESION_PROFILE,
                                      patients=TRAIN_PATIENTS + VAL_PATIENTS)
    table = pd.read_csv(manifest)
    assert set(table["patient_id"]) == set(TRAIN_PATIENTS + VAL_PATIENTS)
    table["split"] = ["train" if p in TRAIN_PATIENTS else "val" for p in table["patient_id"]]
    small = tmp_path / "data" / "small.csv"
    table.to_csv(small, index=False)
    cfg = demo_config(0, False)
    cfg.epochs, cfg.time_budget_s = 8, None
    train_classifier(small, tmp_path / "model", cfg, quiet=True)
    aucs = [h["val_auc_mean"] for h in json.loads((tmp_path / "model" / "config.json").read_text())["history"]]
    assert max(aucs) >= 0.85, aucs
