"""The demo's report stage on a tiny hand-made run, checked from outside: every headline number in report.json is
recomputed from the per-case CSVs beside it with independent code (scikit-learn, brute force), every number in the
HTML equals the JSON, every worst case has its image although the stage runs from another working directory, the
threshold is the one the model folder stores, and each model has a generated card (``model_card.md``)."""

from __future__ import annotations

import html as htmllib
import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from medsight.classification.scan_level import aggregate_slices, fit_scan_level
from medsight.demo import DemoContext
from medsight.demo import report as stage
from medsight.demo.classification import write_scan_predictions
from medsight.metrics.segmentation import segmentation_metrics
from medsight.report.html import fmt
from medsight.report.results import resolve

LABELS = {1: "grey_matter", 2: "lesion"}


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)


def _segmentation(root: Path) -> dict[str, Path]:
    """12 scans, a lesion in the reference of 7; the prediction invents a lesion in 2 of the 5 without one."""
    data, preds = root / "seg" / "data", root / "seg" / "pred"
    (data / "dataset.json").parent.mkdir(parents=True)
    (data / "dataset.json").write_text(json.dumps({"labels": {"background": 0, **{v: k for k, v in LABELS.items()}}}))
    rng = np.random.default_rng(1)
    rows, metrics = [], []
    for i in range(12):
        cid, site = f"demo_{i:03d}", ["site_A", "site_B", "site_C"][i % 3]
        img = rng.normal(100, 10, (24, 20, 8)).astype(np.float32)
        lab = np.zeros(img.shape, np.int16)
        lab[6:18, 5:15, 2:6] = 1
        if i < 7:
            lab[9:12, 8:11, 3:5] = 2
        pred = np.roll(lab, i % 3, axis=0)
        if i < 7 and i % 2:
            pred[pred == 2] = 1  # a missed lesion
        if i in (8, 10):
            pred[2:4, 2:4, 1:3] = 2  # a false-positive finding on a lesion-free scan
        _save(img, data / "imagesTr" / f"{cid}_0000.nii.gz")
        _save(lab, data / "labelsTr" / f"{cid}.nii.gz")
        _save(pred, preds / f"{cid}.nii.gz")
        rows.append({"case_id": cid, "patient_id": f"p{i}", "site": site, "scanner": f"Vendor {site} 1.5T",
                     "sex": "FM"[i % 2], "age": 30 + 4 * i})
        metrics += [{"case_id": cid, "site": site, **m}
                    for m in segmentation_metrics(pred, lab, (1.0, 1.0, 1.0), LABELS)]
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    pd.DataFrame(metrics).to_csv(root / "seg" / "metrics.csv", index=False)
    model = root / "seg" / "model"
    model.mkdir()
    (model / "plan.json").write_text(json.dumps({"fingerprint_sha256": "ab" * 32}))
    (model / "fold_0").mkdir()
    train = [r["case_id"] for r in rows if r["site"] != "site_C"][:6]
    (model / "splits.json").write_text(json.dumps([{"train": train, "val": []}]))
    return {"seg_metrics": root / "seg" / "metrics.csv", "seg_data": data, "seg_model": model,
            "seg_predictions": preds}


def _classification(rel_root: Path) -> dict[str, Path]:
    """Slices of 30 scans (10 validation, 20 test, 8 of those at site_C), written as the demo's stages write them:
    the classification stage's evidence-slice table (paths given relative to the working directory, as with
    ``medsight demo --out relative/dir``), then the safety stage's scan-level calibration and operating point."""
    rng = np.random.default_rng(2)
    cls = rel_root / "cls"
    vols, sl = [], []
    for i in range(30):
        cid, split = f"scan_{i:02d}", "val" if i < 10 else "test"
        site = "site_C" if i >= 22 else ["site_A", "site_B"][i % 2]
        vols.append({"case_id": cid, "patient_id": f"P{i // 2}", "site": site, "sex": "FM"[i % 2], "age": 40 + i})
        y_scan = int(rng.random() < 0.5)
        for z in range(6):
            y = int(y_scan and z in (2, 3))
            img, mask = cls / "data" / "images" / f"{cid}_z{z}.nii.gz", cls / "data" / "masks" / f"{cid}_z{z}.nii.gz"
            _save(rng.normal(0, 1, (16, 16, 1)).astype(np.float32), img)
            _save(np.pad(np.full((4, 4, 1), y, np.uint8), ((6, 6), (6, 6), (0, 0))), mask)
            sl.append({"case_id": cid, "split": split, "y_true": y, "logit": float(2.5 * y + rng.normal(0.5, 1.2)),
                       "referred": int(rng.random() < 0.05), "image": str(img), "mask": str(mask)})
    (cls / "data" / "volumes").mkdir(parents=True)
    pd.DataFrame(vols).to_csv(cls / "data" / "volumes" / "manifest.csv", index=False)
    slices = pd.DataFrame(sl).merge(pd.DataFrame(vols)[["case_id", "patient_id", "site"]], on="case_id")
    test = slices[slices.split == "test"]
    res = {g: {"scores": {"case_id": s.case_id.tolist(), "y": s.y_true.tolist(), "image": s.image.tolist(),
                          "mask": s["mask"].tolist(), "lesion": (1 / (1 + np.exp(-s.logit))).tolist()}}
           for g, s in (("held_out", test[test.site != "site_C"]), ("site_C", test[test.site == "site_C"]))}
    table = write_scan_predictions(res, cls / "predictions_per_scan.csv")  # the classification stage's code
    scans = aggregate_slices(slices.drop(columns=["image", "mask"]))  # what the safety stage does next
    val = scans[scans.split == "val"]
    model = cls / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"thresholds": {"lesion": 0.31}, "threshold_selection": {
        "lesion": {"method": "validation sensitivity >= 0.9", "val_sensitivity": 0.93}},
        "data": {"manifest_sha256": "cd" * 32, "n_train": 99}}))  # no weights: thumbnails without Grad-CAM
    level = fit_scan_level(val.y_true.to_numpy(), val.logit.to_numpy(), "lesion", 0.9)
    level.save(model)
    scans["prob_uncalibrated"] = 1 / (1 + np.exp(-scans.logit))
    scans["prob"] = level.probabilities(scans.logit.to_numpy())
    scans = scans.merge(pd.read_csv(table)[["case_id", "image", "mask"]], on="case_id", how="left")
    scans.to_csv(table, index=False)
    return {"cls_predictions": table, "cls_model": model, "cls_volumes": cls / "data" / "volumes"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    root = tmp_path_factory.mktemp("checkable")
    here = os.getcwd()
    try:
        os.chdir(root)  # the earlier stages ran here with relative paths ...
        paths = {**_segmentation(Path("run")), **_classification(Path("run"))}
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        ctx = DemoContext(out_dir=root / "run" / "out", fast=True, quiet=True)
        ctx.paths.update({k: (root / v).resolve() for k, v in paths.items()})
        os.chdir(elsewhere)  # ... and the report stage runs from another working directory
        stage.run(ctx)
    finally:
        os.chdir(here)
    js = Path(ctx.paths["report_json"])
    return json.loads(js.read_text()), Path(ctx.paths["report"]).read_text(), js.parent


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Brute force: equal-width bins over [0, 1], the last one closed."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).sum() for b in range(bins)
               if (idx == b).any()) / len(y)


def test_segmentation_numbers_recomputed_from_the_per_case_csv(run: tuple[dict, str, Path]) -> None:
    doc, _, folder = run
    seg = doc["segmentation"]
    t = pd.read_csv(folder / doc["data"]["per_case_tables"]["segmentation"])
    t["cohort"] = np.where(t.site == "site_C", "external: site_C", stage.INTERNAL)
    assert [c["name"] for c in seg["cohorts"]] == [stage.INTERNAL, "external: site_C"]
    for c in seg["cohorts"]:
        g = t[t.cohort == c["name"]]
        assert c["n"] == g.case_id.nunique()
        for lab, name in LABELS.items():
            rows = g[g.label == lab]
            has = rows[rows.n_ref_voxels > 0]  # only scans whose reference holds the label
            assert c["dice_n"][name] == len(has)
            assert c["dice"][name]["value"] == pytest.approx(has.dice.mean())
            empty = rows[rows.n_ref_voxels == 0]
            if len(empty):
                e = c["empty_reference"][name]
                assert e["n"] == len(empty) and e["n_fp"] == int((empty.n_pred_voxels > 0).sum())
                assert e["fp_rate"]["value"] == pytest.approx((empty.n_pred_voxels > 0).mean())
                assert e["fp_volume_ml"]["value"] == pytest.approx(empty.volume_pred_ml.mean())
            else:
                assert name not in c["empty_reference"]
    lesion = [c["empty_reference"]["lesion"] for c in seg["cohorts"] if "lesion" in c["empty_reference"]]
    assert sum(e["n"] for e in lesion) == 5 and sum(e["n_fp"] for e in lesion) == 2
    # the false-positive scans each hold exactly one invented finding
    assert sum(e["fp_components"]["value"] * e["n"] for e in lesion) == pytest.approx(2)


def test_classification_numbers_recomputed_at_the_scan_level(run: tuple[dict, str, Path]) -> None:
    doc, _, folder = run
    cls = doc["classification"]
    t = pd.read_csv(folder / doc["data"]["per_case_tables"]["classification"])
    stored = json.loads((Path(doc["model"]["classifier"]) / "scan_level.json").read_text())
    op = cls["operating_point"]
    assert cls["unit"] == "scan" and op["unit"] == "scan" and op["threshold"] == stored["threshold"]
    assert "sensitivity >= 0.9" in op["target"] and op["validation"]["n"] == 10
    names = {c["name"]: c for c in cls["cohorts"]}
    groups = {"validation (calibration and threshold fitted here)": t[t.split == "val"],
              "internal test folds": t[(t.split == "test") & (t.site != "site_C")],
              "external: site_C": t[(t.split == "test") & (t.site == "site_C")]}
    assert set(names) == set(groups)
    for name, g in groups.items():
        c, y, p = names[name], g.y_true.to_numpy(), g.prob.to_numpy()
        thr = op["threshold"]
        assert c["unit"] == "scan" and c["n"] == len(g) and c["n_pos"] == y.sum() and c["threshold"] == thr
        assert c["n_patients"] == g.patient_id.nunique()
        assert c["auc"]["value"] == pytest.approx(roc_auc_score(y, p))
        assert c["sensitivity"]["value"] == pytest.approx(((p >= thr) & (y == 1)).sum() / (y == 1).sum())
        assert c["specificity"]["value"] == pytest.approx(((p < thr) & (y == 0)).sum() / (y == 0).sum())
        assert c["brier_after"]["value"] == pytest.approx(brier_score_loss(y, p))
        assert c["ece_after"]["value"] == pytest.approx(_ece(y, p))
        assert c["ece_before"]["value"] == pytest.approx(_ece(y, g.prob_uncalibrated.to_numpy()))
        assert c["referral_rate"]["value"] == pytest.approx(g.referred.mean())
        assert c["auc"]["lo"] <= c["auc"]["value"] <= c["auc"]["hi"]
    val = names["validation (calibration and threshold fitted here)"]
    assert val["ece_after"]["value"] <= val["ece_before"]["value"]  # fitted there, at the unit shown
    assert op["validation"]["sensitivity"] == pytest.approx(val["sensitivity"]["value"])
    assert val["sensitivity"]["value"] >= 0.9


def test_every_number_in_the_html_equals_the_json(run: tuple[dict, str, Path]) -> None:
    doc, page, _ = run
    spans = re.findall(r'<span class="num" data-json="([^"]+)">([^<]*)</span>', page)
    assert len(spans) > 100
    for path, text in spans:
        assert htmllib.unescape(text) == fmt(resolve(doc, htmllib.unescape(path))), path
    texts = re.findall(r'<span class="txt" data-json-text="([^"]+)" data-json-keys="([^"]*)">([^<]*)</span>', page)
    assert len(texts) > 30  # the model cards: text from the JSON, tagged with its path
    for path, keys, text in texts:
        value = resolve(doc, htmllib.unescape(path))
        for k in json.loads(htmllib.unescape(keys)):
            value = value[int(k)] if isinstance(value, list) else value[k]
        assert htmllib.unescape(text) == (fmt(value) if value is None else str(value)), path
    body = re.sub(r'<span class="(num|txt)"[^>]*>[^<]*</span>|src="data:[^"]*"|<script>.*?</script>', "", page,
                  flags=re.S)
    assert not re.findall(r">[^<]*?\b\d\.\d{3}\b[^<]*<", body)  # no number that did not come from the JSON
    for path in ("classification.operating_point.threshold", "segmentation.cohorts.0.dice_n.lesion",
                 "segmentation.cohorts.0.empty_reference.lesion.fp_rate.value"):
        assert f'data-json="{path}"' in page


def test_worst_cases_have_images_and_models_have_cards(run: tuple[dict, str, Path]) -> None:
    doc, page, report_dir = run
    assert len(doc["worst_cases"]) == 10
    for w in doc["worst_cases"]:
        assert w["thumbnail"] and w["thumbnail"].startswith("data:image/png"), (w["case_id"], w["note"])
    assert "not found" not in page and "No model card was found" not in page
    cards = doc["model_cards"]
    assert [c["task"] for c in cards] == ["segmentation", "classification"]
    for card in cards:
        text = Path(card["file"]).read_text()
        # beside the report, never in the model's folder (the evaluated package is not modified)
        assert Path(card["file"]).name == f"model_card_{card['task']}.md" and card["name"] in text
        assert Path(card["file"]).parent == report_dir.resolve()
        assert card["intended_use"] and card["out_of_scope_use"] and card["extra"]["package_id"]
        assert "sha256" in card["data"]["training data fingerprint"] and card["performance"]["by_cohort"]
        assert any("worst case" in s for s in card["limitations"]) and card["name"] in page
    assert cards[1]["thresholds"]["lesion"] == doc["classification"]["operating_point"]["threshold"]
    assert cards[0]["data"]["training sites"] == ["site_A", "site_B"] and cards[0]["data"]["training cases"] == 6
