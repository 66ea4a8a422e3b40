"""Demo stage "segmentation": build the demo data, plan, train one fold within a time budget, predict the
held-out test cases of the training sites and every case of the unseen site, and evaluate with medsight.metrics.

"held_out" is a test cohort in no fold (``N_TEST`` extra training-site cases, manifest ``split = test``, listed
under ``"test"`` in splits.json): fold 0's validation cases chose the checkpoint and fitted the lesion detection and
referral rules, so figures on them are optimistic; they are reported as ``validation_*`` (the package's own).

Budget: the whole ``medsight demo`` must end in under 10 minutes on 2 CPU cores, so this stage trains a small
3D configuration (the planner's ``memory_gb`` budget picks patch and width) for at most ``TRAIN_SECONDS`` and
predicts without test-time mirroring. Lesions: 80% of the simulated patients have one (so that the held-out test
and unseen-site cohorts hold >= 10 lesion cases each), with the ``enhancing`` profile.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsight.engine.threads import threads_for_now
from medsight.files import atomic_write_text

log = logging.getLogger(__name__)

OUTPUTS = ("data", "segmentation")  # folders under the demo's --out that this stage writes (medsight.cli.demo)

# 64 cases (48 of the training sites in 3 folds: fold 0 trains on 32, validates on 16; site_C 16, 11 with a lesion
# at seed 0), 80% of patients with a lesion; plus a held-out test cohort of 16 training-site cases, 13 with a lesion
# (synthetic/demo_holdout.py: new patients, built after the 64, which stay byte-identical), in no fold
N_CASES, N_CASES_FAST = 64, 12
N_TEST, N_TEST_FAST = 16, 3
LESION_SHARE = 0.8
# bright (post-contrast T1, CNR 6-14) lesions, as the classification demo: on the default "faint" profile (CNR
# 0.5-4, 70% darker than white matter) 120 iterations found 3 of 24 held-out + site_C lesions at 30 false positives
# per case (docs/benchmarks.md "lesions", which keeps measuring "faint")
LESION_PROFILE = "enhancing"  # medsight.synthetic.demo.LESION_PROFILES
N_FOLDS = 3
# 0.15 GB -> patch 32x48x40 (~3x fewer voxels than 0.5 GB's 48x64x64): ~3x the iterations in the same time, which
# the lesion class needs more than the tissue classes need context
MEMORY_GB, BASE_FILTERS = 0.15, 8
EPOCHS, ITERATIONS = 40, 10
TRAIN_SECONDS, TRAIN_SECONDS_FAST = 150.0, 15.0
N_EVIDENCE = 3  # evidence figures (explain/evidence.py): cases with a found lesion first (else the first case)
OVERLAP = 0.25  # window overlap at prediction; 0.5 (nnU-Net's) doubles the demo's prediction time
# the demo model's own validation targets (fold 0's validation cases, measured after training): below them the
# summary prints "below target" in red, the package card carries a banner and the package is not registered
TARGETS = {"val_tissue_dice": 0.85, "val_lesion_sensitivity": 0.8}
# lesion-wise cross-entropy (segmentation/losses.py): every missed demo lesion was 1-17 voxels; with it the fitted
# detection rule kept the same lesions at 0.4-0.6 instead of 1.5-2.9 false lesions per case (docs/benchmarks.md
# "Lesions, issue 33 ... detection rule")
LOSS = "dice_lesionwise_ce"


def run(ctx) -> dict[str, Any]:  # noqa: ANN001 - DemoContext
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads_for_now())
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads_before)


def _run(ctx) -> dict[str, Any]:  # noqa: ANN001
    import torch

    from medsight.data.dataset import load_dataset, validate
    from medsight.data.fingerprint import compute_fingerprint
    from medsight.data.splits import dataset_folds, save_folds
    from medsight.synthetic.demo import TRAINING_SITES, UNSEEN_SITE
    from medsight.segmentation.predict import Predictor, write_prediction
    from medsight.io.nifti import read_nifti
    from medsight.plan.planner import make_plan
    from medsight.engine.energy import EnergyMeter
    from medsight.segmentation.package import package_segmentation, training_dir
    from medsight.segmentation.train import train_fold

    timings: dict[str, float] = {}
    t = time.perf_counter()
    out = Path(ctx.out_dir)
    data = build_data(out / "data", ctx.seed, ctx.fast, ctx.quiet)
    timings["data_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ds = load_dataset(data)
    validate(ds)
    folds = dataset_folds(ds, N_FOLDS, ctx.seed, sites=TRAINING_SITES)  # the test cohort is in none of them
    fold, test = folds[0], folds[0].get("test", [])
    # the plan sees the folds' cases only, as without a test cohort
    fp = compute_fingerprint(ds.subset(sorted({c for f in folds for c in f["train"] + f["val"]})), seed=ctx.seed)
    plan = make_plan(fp, memory_gb=MEMORY_GB, base_filters=BASE_FILTERS, epochs=EPOCHS if not ctx.fast else 2,
                     iterations_per_epoch=ITERATIONS if not ctx.fast else 3)
    plan.config("3d").loss = LOSS
    plan.config("3d").reasons.append(f"demo: loss {LOSS} (lesion-wise cross-entropy weights for 1-17 voxel lesions)")
    package_dir = out / "segmentation" / "model"  # the registered package; training state beside it
    if package_dir.is_dir() and not (package_dir / "manifest.json").exists():
        shutil.rmtree(package_dir)  # a model folder from before packages: this demo's own output, rebuilt
    model_dir = training_dir(package_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    plan.save(model_dir / "plan.json")
    (model_dir / "dataset.json").write_bytes((data / "dataset.json").read_bytes())
    save_folds(folds, model_dir / "splits.json")
    timings["plan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with EnergyMeter() as meter:
        summary = train_fold(ds, plan, "3d", 0, model_dir, fold["train"], fold["val"], seed=ctx.seed,
                             max_seconds=TRAIN_SECONDS_FAST if ctx.fast else TRAIN_SECONDS, quiet=ctx.quiet,
                             study_mirroring=False)  # the demo predicts without mirroring
    timings["train_s"] = time.perf_counter() - t
    pkg = package_segmentation(model_dir, package_dir, name="demo-segmentation", energy=meter.record(),
                               targets=None if ctx.fast else TARGETS)
    t = time.perf_counter()

    # no test-time mirroring: each axis doubles the prediction time (7.2 s instead of 1-2 s per case with all
    # three) for a measured gain of 0.003-0.005 Dice (docs/benchmarks.md "segmentation_demo")
    predictor = Predictor(pkg.path, overlap=OVERLAP, mirror=False)
    pred_dir = out / "segmentation" / "predictions"
    unseen = [c.case_id for c in ds.cases if c.site == UNSEEN_SITE]
    targets = [(cid, "held_out") for cid in test] + [(cid, "unseen_site") for cid in unseen]
    rows: list[dict[str, Any]] = []
    lesion_cases: dict[str, list[Any]] = {"held_out": [], "unseen_site": []}
    seconds = []
    items = targets
    if not ctx.quiet:
        from tqdm import tqdm

        items = tqdm(targets, desc="predict", unit="case", leave=False)
    evidence: list[Path] = []  # evidence figures written (explain/evidence.py)
    first: tuple[Any, ...] | None = None  # the first case, for an evidence figure if no lesion is found at all
    for n, (cid, group) in enumerate(items):
        case = ds.case(cid)
        image = read_nifti(case.images[0])
        pred = predictor.predict(image)
        seconds.append(pred.seconds)
        written = write_prediction(pred, pred_dir / f"{cid}.nii.gz", uncertainty=n == 0)
        ref = read_nifti(case.label).array.astype(np.int16)
        if n == 0:
            first = (image, pred, ref, written, pred_dir / f"{cid}_evidence.png")
        evidence += _evidence(image, pred, ref, ds.labels, written, pred_dir / f"{cid}_evidence.png", evidence)
        for m in _metrics(pred.labels.array, ref, image.spacing, ds.foreground):
            rows.append({"case_id": cid, "group": group, "site": case.site, **m})
        lesion_cases[group] += _lesion_cases(pred, ref, image.spacing, ds.foreground, cid, case.patient_id)
    if not evidence and first is not None:  # no lesion found anywhere: show the first case (and what it missed)
        evidence += _evidence(*first[:3], ds.labels, *first[3:], evidence, need_found=False)
    timings["predict_evaluate_s"] = time.perf_counter() - t
    table = out / "segmentation" / "metrics.csv"
    _write_csv(table, rows)
    ctx.paths["seg_data"] = data
    ctx.paths["seg_model"] = package_dir
    ctx.paths["seg_plan"] = package_dir / "plan.json"
    ctx.paths["seg_predictions"] = pred_dir
    ctx.paths["seg_metrics"] = table
    ctx.paths["seg_tensorboard"] = model_dir / "fold_0" / "tensorboard"
    if evidence:
        ctx.paths["seg_evidence"] = evidence[0]
    result: dict[str, Any] = {
        "cases": len(ds.cases), "train_cases": len(fold["train"]), "held_out_cases": len(test),
        "unseen_site_cases": len(unseen), "patch_size": plan.config("3d").patch_size,
        "epochs_done": summary["epochs_done"], "stopped_by_time_budget": summary["stopped_by_time_budget"],
        "torch_threads": torch.get_num_threads(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "seconds_per_case_predict": round(float(np.mean(seconds)), 2) if seconds else None,
        "lesion_profile": LESION_PROFILE, "lesion_share": LESION_SHARE,
    }
    if pkg.extra.get("validation_target"):  # "below target: ..." prints in red (demo/summary.py)
        result["validation_target"] = pkg.extra["validation_target"]["text"]
    if pkg.extra.get("metrics", {}).get("lesion_detection"):  # the rule predict applied (lesion_detection.json)
        result["lesion_detection"] = pkg.extra["metrics"]["lesion_detection"]
    for group in ("held_out", "unseen_site"):
        for name in ds.foreground.values():
            vals = [r["dice"] for r in rows if r["group"] == group and r["name"] == name and not np.isnan(r["dice"])]
            if name == "lesion":  # only cases that have a lesion: Dice of an absent lesion is not informative
                vals = [r["dice"] for r in rows if r["group"] == group and r["name"] == name and r["volume_ref_ml"] > 0]
            result[f"{group}_dice_{name}"] = round(float(np.mean(vals)), 4) if vals else None
    result["held_out_dice_gm_wm_mean"] = round(float(np.mean([result["held_out_dice_grey_matter"],
                                                              result["held_out_dice_white_matter"]])), 4)
    result.update(_lesion_summary(lesion_cases, out / "segmentation", ctx.seed))
    # fold 0's validation cases (chose the checkpoint, fitted the rules): last, after the held-out test figures
    result["validation_cases"] = len(fold["val"])
    metrics = pkg.extra.get("metrics", {})
    for key in ("val_tissue_dice", "val_lesion_sensitivity", "val_lesion_fp_per_case", "val_lesion_n_ref"):
        if isinstance(metrics.get(key), (int, float)):
            result[key.replace("val_", "validation_", 1)] = round(float(metrics[key]), 4)
    ctx.paths["seg_lesions"] = out / "segmentation" / "lesion_summary.json"
    return result


def build_data(root: Path, seed: int, fast: bool = False, quiet: bool = True,
               patients: list[str] | None = None) -> Path:
    """The stage's data (cached by its stamp): the demo cases and the held-out test cohort of the training sites;
    ``patients``: only their cases (``build_demo_dataset``), for tests that need a few."""
    from medsight.synthetic.demo import build_demo_dataset

    return build_demo_dataset(root, n_cases=N_CASES_FAST if fast else N_CASES, seed=seed, quiet=quiet,
                              lesion_share=LESION_SHARE, lesion_profile=LESION_PROFILE,
                              n_test=N_TEST_FAST if fast else N_TEST, patients=patients)


def _lesion_cases(pred: Any, ref: np.ndarray, spacing: tuple[float, ...], labels: dict[int, str], cid: str,
                  patient: str) -> list[Any]:
    """Lesion-wise matching of one case for each lesion label, scored by the lesion probability (for FROC)."""
    from medsight.metrics.lesions import case_lesions, is_lesion_name

    return [case_lesions(pred.labels.array == k, ref == k, spacing, cid, patient, pred.probabilities[k])
            for k, name in labels.items() if is_lesion_name(name)]


def _lesion_summary(cases: dict[str, list[Any]], out: Path, seed: int) -> dict[str, Any]:
    """Lesion-wise sensitivity and FPs per case for the demo table; everything else in lesion_summary.json."""
    import json

    from medsight.metrics.lesions import summarise_lesions

    full, short = {}, {}
    for group, cs in cases.items():
        if not cs:
            continue
        s = summarise_lesions(cs, n_boot=200, seed=seed)
        full[group] = s
        m = s["metrics"]
        for key in ("sensitivity", "fp_per_case"):  # NaN (no lesion in the group) is shown as "-"
            v = m[key]["value"]
            short[f"{group}_lesion_{key}"] = round(v, 4) if np.isfinite(v) else None
        at1 = s["froc"].get("sensitivity_at_1fp", float("nan"))  # FROC: lesions scored by their max probability
        short[f"{group}_lesion_sensitivity_at_1fp"] = round(at1, 4) if np.isfinite(at1) else None
        short[f"{group}_lesion_cases"] = sum(1 for c in cs if c.ref)
    atomic_write_text(out / "lesion_summary.json", json.dumps(full, indent=2, default=float))
    return short


def _metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], labels: dict[int, str]) -> list[dict]:
    from medsight.metrics.segmentation import segmentation_metrics

    return segmentation_metrics(pred, ref, tuple(spacing), labels)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _evidence(image, pred, ref: np.ndarray, labels: dict[str, int], written: dict, path: Path,  # noqa: ANN001
              done: list[Path], need_found: bool = True) -> list[Path]:
    """An evidence figure for a case whose lesion was found (a predicted lesion overlaps the reference), up to
    N_EVIDENCE; ``need_found=False`` writes one whatever was found (the fallback for the first case)."""
    from medsight.explain.predictions import finding_label, lesion_table_beside, write_segmentation_evidence

    names = {v: k for k, v in labels.items()}
    k, _ = finding_label(names)
    if len(done) >= N_EVIDENCE or (need_found and not np.any((pred.labels.array == k) & (ref == k))):
        return []
    return [write_segmentation_evidence(image, pred.labels.array, pred.probabilities, names, path,
                                        lesion_table_beside(written), reference=ref == k)]
