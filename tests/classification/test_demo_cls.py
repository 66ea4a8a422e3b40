"""Demo slices: labels agree with the lesion masks and the case's contrast; splits keep patients whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.classification.manifest import read_manifest
from medsight.synthetic import demo_cls
from medsight.io import read_image


def test_slice_labels_follow_masks_and_splits_keep_patients(tmp_path: Path) -> None:
    manifest = demo_cls.build_demo_cls_dataset(tmp_path / "cls", n_cases=3, seed=0, quiet=True)
    table = pd.read_csv(manifest)
    assert set(table["site"]) == {"site_A", "site_B", "site_C"}
    for _, row in table.iterrows():
        mask = read_image(manifest.parent / row["mask"])
        area = float(np.asarray(mask.array > 0).sum() * mask.spacing[0] * mask.spacing[1])
        assert abs(area - row["_lesion_area_mm2"]) < 0.1
        expected = area >= demo_cls.MIN_LESION_MM2 and row["_lesion_cnr"] >= demo_cls.MIN_CNR
        assert row["lesion"] == int(expected)
        assert row["large_lesion"] == int(expected and area >= demo_cls.LARGE_LESION_MM2)
        if not expected:
            assert area == 0.0  # a slice through a faint or small lesion is indeterminate: left out
    stamp = json.loads((manifest.parent / ".demo_cls_build.json").read_text())
    assert stamp["indeterminate_slices_left_out"] >= 0
    split = demo_cls.with_splits(manifest, manifest.parent / "split.csv")
    checked = read_manifest(split, ["lesion", "large_lesion"])  # raises on a patient in two splits
    t = checked.table
    assert set(t.loc[t["site"] == "site_C", "split"]) == {"test"}
    # cached: a second call returns the same manifest without rebuilding
    before = manifest.stat().st_mtime_ns
    assert demo_cls.build_demo_cls_dataset(tmp_path / "cls", n_cases=3, seed=0, quiet=True) == manifest
    assert manifest.stat().st_mtime_ns == before
