"""``medsight evaluate seg`` and ``cls`` end to end on small files, values checked against independent references."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_hausdorff_distance
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from medsight.cli.main import main
from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti

SPACING = (0.9, 1.1, 2.5)


def _write(folder: Path, case: str, arr: np.ndarray, spacing: tuple[float, ...] = SPACING) -> None:
    write_nifti(Image(arr.astype(np.uint8), Geometry.identity(3, spacing)), folder / f"{case}.nii.gz", sidecar=False)


def _seg_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(0)
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    cases = {}
    for i in range(3):
        ref = np.zeros((20, 18, 10), np.uint8)
        ref[4:14, 3:12, 2:7] = 1
        ref[6:9, 5:8, 3:5] = 2
        pred = np.roll(ref, int(rng.integers(-2, 3)), axis=0)
        _write(ref_dir, f"case_{i:03d}", ref)
        _write(pred_dir, f"case_{i:03d}", pred)
        cases[f"case_{i:03d}"] = (pred, ref)
    (ref_dir.parent / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "lesion": 2}}))
    return pred_dir, ref_dir, cases


def test_evaluate_seg_writes_tables_matching_monai(tmp_path: Path) -> None:
    pred_dir, ref_dir, cases = _seg_folders(tmp_path)
    out = tmp_path / "eval"
    main(["-q", "evaluate", "seg", str(pred_dir), str(ref_dir), "--out", str(out), "--n-boot", "100"])
    per_case = pd.read_csv(out / "per_case.csv")
    assert len(per_case) == 6 and set(per_case["name"]) == {"organ", "lesion"}
    for _, row in per_case.iterrows():
        pred, ref = cases[row["case_id"]]
        p = torch.from_numpy((pred == row["label"])[None, None].astype(np.float32))
        r = torch.from_numpy((ref == row["label"])[None, None].astype(np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95 = compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING).item()
        assert row["hd95"] == pytest.approx(hd95, rel=1e-5)
    summary = pd.read_csv(out / "summary.csv")
    organ_dice = summary[(summary["name"] == "organ") & (summary["metric"] == "dice")].iloc[0]
    assert organ_dice["mean"] == pytest.approx(per_case[per_case["name"] == "organ"]["dice"].mean())
    assert organ_dice["lo"] <= organ_dice["mean"] <= organ_dice["hi"]
    data = json.loads((out / "summary.json").read_text())
    assert data["n_cases"] == 3 and data["labels"] == {"1": "organ", "2": "lesion"}


def test_evaluate_seg_subgroups_from_manifest(tmp_path: Path) -> None:
    pred_dir, ref_dir, _ = _seg_folders(tmp_path)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"case_id": ["case_000", "case_001", "case_002"], "site": ["site_A", "site_A", "site_C"]}
                 ).to_csv(manifest, index=False)
    out = tmp_path / "eval"
    main(["-q", "evaluate", "seg", str(pred_dir), str(ref_dir), "--out", str(out), "--n-boot", "50",
          "--manifest", str(manifest), "--group-by", "site", "--min-cases", "1"])
    per_case = pd.read_csv(out / "per_case.csv")
    sub = pd.read_csv(out / "subgroups.csv")
    row = sub[(sub["name"] == "organ") & (sub["metric"] == "dice") & (sub["group"] == "site_A")].iloc[0]
    expected = per_case[(per_case["name"] == "organ") & per_case["case_id"].isin(["case_000", "case_001"])]["dice"]
    assert row["n"] == 2 and row["value"] == pytest.approx(expected.mean())
    pd.DataFrame({"case_id": ["case_000"], "site": ["site_A"]}).to_csv(manifest, index=False)
    with pytest.raises(SystemExit):
        main(["-q", "evaluate", "seg", str(pred_dir), str(ref_dir), "--out", str(out), "--manifest", str(manifest),
              "--group-by", "site"])


def test_evaluate_seg_rejects_mismatched_spacing_and_missing_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                   ) -> None:
    pred_dir, ref_dir, cases = _seg_folders(tmp_path)
    _write(pred_dir, "case_001", cases["case_001"][0], spacing=(0.9, 1.1, 3.0))
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "evaluate", "seg", str(pred_dir), str(ref_dir), "--out", str(tmp_path / "e")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "case_001" in err and "spacing" in err and err.count("\n") == 1
    (pred_dir / "case_002.nii.gz").unlink()
    with pytest.raises(SystemExit):
        main(["-q", "evaluate", "seg", str(pred_dir), str(ref_dir)])
    assert "no prediction for 1 reference case(s): case_002" in capsys.readouterr().err


def _predictions_csv(path: Path, n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({
        "case_id": [f"c{i}" for i in range(n)],
        "lesion": y,
        "lesion_score": 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=n)))),
        "site": rng.choice(["site_A", "site_B", "site_C"], n),
        "age": rng.integers(20, 90, n),
    })
    df.to_csv(path, index=False)
    return df


def test_evaluate_cls_summary_and_subgroups(tmp_path: Path) -> None:
    csv = tmp_path / "preds.csv"
    df = _predictions_csv(csv)
    out = tmp_path / "cls"
    main(["-q", "evaluate", "cls", str(csv), "--out", str(out), "--group-by", "site", "--group-by", "age",
          "--n-boot", "100", "--min-cases", "10", "--threshold", "0.5", "--target-sensitivity", "0.9"])
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    assert summary["auc"] == pytest.approx(roc_auc_score(df["lesion"], df["lesion_score"]))
    assert summary["auc_delong_lo"] < summary["auc"] < summary["auc_delong_hi"]
    assert summary["at_target_sensitivity_sensitivity"] >= 0.9
    sub = pd.read_csv(out / "subgroups.csv")
    a = sub[(sub["attribute"] == "site") & (sub["group"] == "site_A")].iloc[0]
    sel = df["site"] == "site_A"
    assert a["value"] == pytest.approx(roc_auc_score(df.loc[sel, "lesion"], df.loc[sel, "lesion_score"]))
    assert set(sub.loc[sub["attribute"] == "age", "group"]) <= {"0-39", "40-59", "60-79", "80+"}
    data = json.loads((out / "summary.json").read_text())
    assert data["tasks"]["lesion"]["n"] == len(df) and "brier" in data["tasks"]["lesion"]
    assert len(pd.read_csv(out / "per_case.csv")) == len(df)


def test_evaluate_cls_nan_score_names_the_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "preds.csv"
    df = _predictions_csv(csv, 30)
    df.loc[7, "lesion_score"] = np.nan
    df.to_csv(csv, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "evaluate", "cls", str(csv), "--threshold", "0.5"])
    assert exit_info.value.code == 2
    assert "case c7" in capsys.readouterr().err


def test_evaluate_cls_quadratic_kappa_for_grades(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    grade = rng.integers(0, 5, 120)
    df = pd.DataFrame({"case_id": range(120), "dr_grade": grade,
                       "dr_grade_pred": np.clip(grade + rng.integers(-1, 2, 120), 0, 4)})
    csv = tmp_path / "grades.csv"
    df.to_csv(csv, index=False)
    main(["-q", "evaluate", "cls", str(csv), "--kappa", "dr_grade:dr_grade_pred", "--n-boot", "100",
          "--out", str(tmp_path / "k")])
    k = json.loads((tmp_path / "k" / "summary.json").read_text())["kappa"]["dr_grade:dr_grade_pred"]
    assert k["kappa"] == pytest.approx(cohen_kappa_score(df["dr_grade"], df["dr_grade_pred"], weights="quadratic"))
    assert k["lo"] <= k["kappa"] <= k["hi"] and np.sum(k["confusion_matrix"]) == 120


def test_evaluate_cls_takes_the_packages_threshold_never_one_fitted_on_the_test_set(tmp_path: Path) -> None:
    from medsight.package import save_package

    csv = tmp_path / "preds.csv"
    df = _predictions_csv(csv)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"thresholds": {"lesion": 0.37}}))
    pkg = save_package(src, tmp_path / "pkg", task="classification", name="eval-thr", register=False)
    main(["-q", "evaluate", "cls", str(csv), "--model", str(pkg.path), "--out", str(tmp_path / "o"), "--n-boot", "20"])
    data = json.loads((tmp_path / "o" / "summary.json").read_text())
    at = data["tasks"]["lesion"]["at_threshold"]
    y, s = df["lesion"].to_numpy(), df["lesion_score"].to_numpy()
    assert at["threshold"] == 0.37 and data["thresholds"] == {"lesion": 0.37}
    assert at["sensitivity"] == pytest.approx(np.mean(s[y == 1] >= 0.37))
    assert at["specificity"] == pytest.approx(np.mean(s[y == 0] < 0.37))
    assert "at_target_sensitivity" not in data["tasks"]["lesion"]  # nothing chosen on the test predictions
    assert data["threshold_source"].startswith("package")
