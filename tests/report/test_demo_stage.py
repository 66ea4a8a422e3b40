"""The demo stage on a tiny hand-made dataset: report + JSON written, thumbnails drawn, page opens in Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medsight.demo import DemoContext
from medsight.demo import report as stage

from .test_html import CHROMIUM, _chromium


def _tiny(root: Path) -> DemoContext:
    data = root / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    (data / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "grey_matter": 1, "lesion": 2},
                                                   "channel_names": {"0": "T1"}}))
    rng = np.random.default_rng(0)
    rows, metrics = [], []
    preds = root / "pred"
    preds.mkdir()
    for i in range(12):
        cid, site = f"demo_{i:03d}", ["site_A", "site_B", "site_C"][i % 3]
        img = rng.normal(100, 10, (24, 20, 8)).astype(np.float32)
        lab = np.zeros(img.shape, np.int16)
        lab[6:18, 5:15, 2:6] = 1
        lab[9:12, 8:11, 3:5] = 2
        pred = np.roll(lab, i % 3, axis=0)
        for arr, path in ((img, data / "imagesTr" / f"{cid}_0000.nii.gz"), (lab, data / "labelsTr" / f"{cid}.nii.gz"),
                          (pred, preds / f"{cid}.nii.gz")):
            nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
        rows.append({"case_id": cid, "image": f"imagesTr/{cid}_0000.nii.gz", "label": f"labelsTr/{cid}.nii.gz",
                     "patient_id": f"p{i}", "site": site, "scanner": f"scanner_{site}", "sex": "FM"[i % 2],
                     "age": 30 + 4 * i})
        for k, name in ((1, "grey_matter"), (2, "lesion")):
            p, r = pred == k, lab == k
            metrics.append({"case_id": cid, "group": "x", "site": site, "label": k, "name": name,
                            "dice": 2 * (p & r).sum() / (p.sum() + r.sum())})
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    pd.DataFrame(metrics).to_csv(root / "metrics.csv", index=False)
    model = root / "model"
    model.mkdir()
    (model / "plan.json").write_text("{}")
    ctx = DemoContext(out_dir=root / "out", fast=True, quiet=True)
    ctx.paths.update(seg_metrics=root / "metrics.csv", seg_data=data, seg_model=model, seg_predictions=preds)
    return ctx


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoContext, dict]:
    ctx = _tiny(tmp_path_factory.mktemp("demo"))
    return ctx, stage.run(ctx)


def test_stage_writes_report(demo_report: tuple[DemoContext, dict]) -> None:
    ctx, out = demo_report
    html, js = Path(ctx.paths["report"]), Path(ctx.paths["report_json"])
    doc = json.loads(js.read_text())
    assert out["report"] == str(html) and html.is_file()
    assert [c["name"] for c in doc["segmentation"]["cohorts"]] == [stage.INTERNAL, "external: site_C"]
    ext = doc["segmentation"]["cohorts"][1]
    m = pd.read_csv(ctx.paths["seg_metrics"])
    site_c_gm = m[(m.site == "site_C") & (m.label == 1)].dice
    assert ext["n"] == 4 and ext["dice"]["grey_matter"]["value"] == pytest.approx(site_c_gm.mean())
    # the worst case is the case with the lowest mean Dice, and it has a thumbnail
    worst = m.groupby("case_id").dice.mean().idxmin()
    assert doc["worst_cases"][0]["case_id"] == worst and doc["worst_cases"][0]["thumbnail"].startswith("data:image")
    assert "plan.json" in doc["model"]["hashes"] and doc["data"]["manifest_sha256"]


@pytest.mark.requires_tool("chromium", "chromium-browser", why="apt-get install chromium (.ci/run does)")
def test_demo_report_opens_in_chromium(demo_report: tuple[DemoContext, dict], tmp_path: Path) -> None:
    ctx, _ = demo_report
    dom = _chromium(Path(ctx.paths["report"]), tmp_path, "--dump-dom")
    widths = [int(w) for w in re.search(r'data-image-widths="([\d,]*)"', dom.stdout).group(1).split(",") if w]
    assert len(widths) >= 5 and min(widths) > 0
    assert 'data-resources="0"' in dom.stdout
    assert not [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln]
