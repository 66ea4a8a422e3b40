"""Demo stage "segmentation": build the demo data, plan, train one fold within a time budget, predict the
held-out cases of the training sites and every case of the unseen site, and evaluate with medsight.metrics.

Budget: the whole ``medsight demo`` must end in under 10 minutes on 2 CPU cores, so this stage trains a small
3D configuration (the planner's ``memory_gb`` budget picks patch and width) for at most ``TRAIN_SECONDS``.
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

N_CASES, N_CASES_FAST = 40, 12
MEMORY_GB, BASE_FILTERS = 0.5, 8
EPOCHS, ITERATIONS = 20, 10
TRAIN_SECONDS, TRAIN_SECONDS_FAST = 240.0, 15.0
N_EVIDENCE = 3  # evidence figures (explain/evidence.py): the first case, then cases with a lesion
OVERLAP = 0.25  # window overlap at prediction; 0.5 (nnU-Net's) doubles the demo's prediction time


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
    from medsight.synthetic.demo import TRAINING_SITES, UNSEEN_SITE, build_demo_dataset
    from medsight.segmentation.predict import Predictor, write_prediction
    from medsight.io.nifti import read_nifti
    from medsight.plan.planner import make_plan
    from medsight.engine.energy import EnergyMeter
    from medsight.segmentation.package import package_segmentation, training_dir
    from medsight.segmentation.train import train_fold

    timings: dict[str, float] = {}
    t = time.perf_counter()
    out = Path(ctx.out_dir)
    data = build_demo_dataset(out / "data", n_cases=N_CASES_FAST if ctx.fast else N_CASES, seed=ctx.seed,
                              quiet=ctx.quiet)
    timings["data_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ds = load_dataset(data)
    validate(ds)
    fp = compute_fingerprint(ds.subset([c.case_id for c in ds.cases if c.site in TRAINING_SITES]), seed=ctx.seed)
    plan = make_plan(fp, memory_gb=MEMORY_GB, base_filters=BASE_FILTERS, epochs=EPOCHS if not ctx.fast else 2,
                     iterations_per_epoch=ITERATIONS if not ctx.fast else 3)
    package_dir = out / "segmentation" / "model"  # the registered package; training state beside it
    if package_dir.is_dir() and not (package_dir / "manifest.json").exists():
        shutil.rmtree(package_dir)  # a model folder from before packages: this demo's own output, rebuilt
    model_dir = training_dir(package_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    plan.save(model_dir / "plan.json")
    (model_dir / "dataset.json").write_bytes((data / "dataset.json").read_bytes())
    folds = dataset_folds(ds, 5, ctx.seed, sites=TRAINING_SITES)
    save_folds(folds, model_dir / "splits.json")
    fold = folds[0]
    timings["plan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with EnergyMeter() as meter:
        summary = train_fold(ds, plan, "3d", 0, model_dir, fold["train"], fold["val"], seed=ctx.seed,
                             max_seconds=TRAIN_SECONDS_FAST if ctx.fast else TRAIN_SECONDS, quiet=ctx.quiet)
    timings["train_s"] = time.perf_counter() - t
    pkg = package_segmentation(model_dir, package_dir, name="demo-segmentation", energy=meter.record())
    t = time.perf_counter()

    predictor = Predictor(pkg.path, overlap=OVERLAP)  # mirrors the axes the package measured as worth it (tta.py)
    pred_dir = out / "segmentation" / "predictions"
    unseen = [c.case_id for c in ds.cases if c.site == UNSEEN_SITE]
    targets = [(cid, "held_out") for cid in fold["val"]] + [(cid, "unseen_site") for cid in unseen]
    rows: list[dict[str, Any]] = []
    lesion_cases: dict[str, list[Any]] = {"held_out": [], "unseen_site": []}
    seconds = []
    items = targets
    if not ctx.quiet:
        from tqdm import tqdm

        items = tqdm(targets, desc="predict", unit="case", leave=False)
    evidence: list[Path] = []  # evidence figures written (explain/evidence.py)
    for n, (cid, group) in enumerate(items):
        case = ds.case(cid)
        image = read_nifti(case.images[0])
        pred = predictor.predict(image)
        seconds.append(pred.seconds)
        written = write_prediction(pred, pred_dir / f"{cid}.nii.gz", uncertainty=n == 0)
        ref = read_nifti(case.label).array.astype(np.int16)
        evidence += _evidence(image, pred, ref, ds.labels, written, pred_dir / f"{cid}_evidence.png", evidence)
        for m in _metrics(pred.labels.array, ref, image.spacing, ds.foreground):
            rows.append({"case_id": cid, "group": group, "site": case.site, **m})
        lesion_cases[group] += _lesion_cases(pred, ref, image.spacing, ds.foreground, cid, case.patient_id)
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
        "cases": len(ds.cases), "train_cases": len(fold["train"]), "held_out_cases": len(fold["val"]),
        "unseen_site_cases": len(unseen), "patch_size": plan.config("3d").patch_size,
        "epochs_done": summary["epochs_done"], "stopped_by_time_budget": summary["stopped_by_time_budget"],
        "torch_threads": torch.get_num_threads(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "seconds_per_case_predict": round(float(np.mean(seconds)), 2) if seconds else None,
    }
    for group in ("held_out", "unseen_site"):
        for name in ds.foreground.values():
            vals = [r["dice"] for r in rows if r["group"] == group and r["name"] == name and not np.isnan(r["dice"])]
            if name == "lesion":  # only cases that have a lesion: Dice of an absent lesion is not informative
                vals = [r["dice"] for r in rows if r["group"] == group and r["name"] == name and r["volume_ref_ml"] > 0]
            result[f"{group}_dice_{name}"] = round(float(np.mean(vals)), 4) if vals else None
    result["held_out_dice_gm_wm_mean"] = round(float(np.mean([result["held_out_dice_grey_matter"],
                                                              result["held_out_dice_white_matter"]])), 4)
    result.update(_lesion_summary(lesion_cases, out / "segmentation", ctx.seed))
    ctx.paths["seg_lesions"] = out / "segmentation" / "lesion_summary.json"
    return result


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
              done: list[Path]) -> list[Path]:
    """An evidence figure for the first case, then for cases with a lesion (predicted or annotated), N_EVIDENCE in all."""
    from medsight.explain.predictions import finding_label, lesion_table_beside, write_segmentation_evidence

    names = {v: k for k, v in labels.items()}
    k, _ = finding_label(names)
    if len(done) >= N_EVIDENCE or (done and not (np.any(pred.labels.array == k) or np.any(ref == k))):
        return []  # the first case always; then cases with a predicted or an annotated (perhaps missed) lesion
    return [write_segmentation_evidence(image, pred.labels.array, pred.probabilities, names, path,
                                        lesion_table_beside(written), reference=ref == k)]
