"""Demo stage ``classification``: lesion-presence classifier on slices of the demo volumes.

Trains on site_A/site_B patients, picks the decision threshold on validation patients, then reports AUC with
its DeLong 95% CI on held-out patients of the training sites and on the unseen site_C, the pointing game and
deletion curve of its Grad-CAM maps against the lesion masks, and saves a few heatmap overlays through
``predict-cls``'s own code. The benchmark (benchmarks/bench_classification.py) repeats the same experiment over
several seeds, beside a handcrafted-feature baseline.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medsight.classification import load_classifier
from medsight.classification.package import package_classifier
from medsight.engine.energy import EnergyMeter
from medsight.engine.threads import threads_for_now
from medsight.classification.evaluate import auc_report, explanation_checks, predict_paths
from medsight.classification.predict import predict_images
from medsight.classification.train import TrainConfig, train_classifier
from medsight.synthetic.demo import UNSEEN_SITE
from medsight.synthetic.demo_cls import build_demo_cls_dataset, with_splits

log = logging.getLogger(__name__)

LABELS = ["lesion", "large_lesion"]
# its own volumes, from the segmentation demo's generator: more of them, and every patient with a lesion, since
# a slice classifier needs many distinct findings (40 volumes hold ~10 conspicuous lesions, too few to learn from)
N_CASES, N_CASES_FAST = 200, 12
CLS_LESION_SHARE = 1.0
# bright (enhancing) lesions: what a reader scores lesion presence on. On the segmentation demo's faint, mostly
# hypointense lesions no slice classifier we tried beat AUC ~0.6 (docs/classification.md)
CLS_LESION_PROFILE = "enhancing"
# the mean validation AUC (lesion, large_lesion) below which the demo's classifier is marked "below target" (red in
# the summary, a banner in the report, its card) and is not registered as a serving candidate
VALIDATION_TARGET = 0.9


DEMO_EPOCHS = 10
DEMO_TIME_BUDGET_S = 180.0


def demo_config(seed: int, fast: bool) -> TrainConfig:
    """The demo's training choices (CPU-sized; ~1.2 minutes on 2 idle cores, stopped after 3 minutes at the latest).

    The evidence-map backbone (fully convolutional, logit = spatial maximum) both detects and localises: with a
    globally pooled ResNet the same data gave AUC 0.97 but a pointing game of 0.02. Without help its loss sat at
    the prior until the network happened to find the lesions (~10 epochs here; on other machines and thread
    counts never, in 30 epochs: AUC 0.48). The masks the demo has anyway now guide it: the evidence inside each
    lesion must say "lesion" (``mask_loss="inside"``), from a flat (zero) evidence head. With that recipe the
    30-epoch run passed validation AUC 0.96 at epoch 5 and 0.98 at epoch 7 (one-cycle over 30 epochs); 10 epochs
    (the one-cycle schedule compressed to them) cut training by two thirds (docs/benchmarks.md "robustness")."""
    return TrainConfig(backbone="resnet10-slim-evidence", input_size=(96, 96), epochs=3 if fast else DEMO_EPOCHS,
                       batch_size=32, lr=2e-3, weighted_sampling=True, carvemix=0.3, target_sensitivity=0.9,
                       mask_weight=1.0, mask_loss="inside",
                       seed=seed, labels=LABELS, task="multilabel", time_budget_s=None if fast else DEMO_TIME_BUDGET_S,
                       validation_target=VALIDATION_TARGET)


def run_experiment(work: Path, cfg: TrainConfig, n_cases: int, seed: int = 0, quiet: bool = True,
                   volumes: Path | None = None, n_heatmaps: int = 4, lesion_share: float = CLS_LESION_SHARE,
                   lesion_profile: str = CLS_LESION_PROFILE, package_name: str = "demo-classification",
                   register: bool = True) -> dict[str, Any]:
    """Data -> split -> train -> package (``work/model``) -> evaluate on held-out training-site patients and the
    unseen site."""
    work = Path(work)
    t_data = time.perf_counter()
    manifest = build_demo_cls_dataset(work / "data", n_cases=n_cases, seed=seed, quiet=quiet, volumes=volumes,
                                      lesion_share=lesion_share, lesion_profile=lesion_profile)
    split_manifest = with_splits(manifest, work / "data" / "manifest_split.csv", seed=seed)
    t0 = time.perf_counter()
    timings = {"data_s": round(t0 - t_data, 1)}
    if (work / "model").is_dir() and not (work / "model" / "manifest.json").exists():
        shutil.rmtree(work / "model")  # a model folder from before packages: this experiment's own output
    with EnergyMeter() as meter:
        trained = train_classifier(split_manifest, work / "model.training", cfg, quiet=quiet)
    train_seconds = time.perf_counter() - t0
    timings["train_s"] = round(train_seconds, 1)
    t_eval = time.perf_counter()
    package_classifier(work / "model.training", work / "model", name=package_name, energy=meter.record(),
                       register=register)
    shutil.rmtree(work / "model.training", ignore_errors=True)
    bundle = load_classifier(work / "model")
    table = pd.read_csv(split_manifest)
    root = split_manifest.parent
    # a loaded machine can stop training before the lesions are found (the loss sits at the prior for ~10 epochs):
    # the table then says so next to an AUC near 0.5
    out: dict[str, Any] = {"train_seconds": round(train_seconds, 1),
                           "epochs": f"{trained['epochs']} of {trained['epochs_planned']}"
                           + (" (stopped by the time budget)" if trained["stopped_by_time_budget"] else ""),
                           "n_train": trained["n_train"], "n_val": trained["n_val"],
                           "thresholds": trained["thresholds"], "backbone": cfg.backbone,
                           "validation_target": trained["validation_target"]}
    test = table[table["split"] == "test"]
    groups = (("held_out", test[test["site"] != UNSEEN_SITE]), (UNSEEN_SITE, test[test["site"] == UNSEEN_SITE]))
    for name, rows in groups:
        if rows.empty:
            continue
        x, prob = predict_paths(bundle, [root / p for p in rows["image"]])
        res: dict[str, Any] = {}
        for j, label in enumerate(bundle.labels):
            res[label] = auc_report(rows[label].to_numpy(), prob[:, j], bundle.thresholds.get(label),
                                    groups=rows["patient_id"].astype(str).to_numpy(), seed=seed)
        pos = np.flatnonzero(rows["lesion"].to_numpy() == 1)
        if len(pos):
            sub = rows.iloc[pos]
            res["explanations"] = explanation_checks(bundle, x[pos], [root / p for p in sub["image"]],
                                                     [root / p for p in sub["mask"]], label_index=0, seed=seed,
                                                     also_tolerances=(2,))
            res["explanations_tolerance_2px"] = res["explanations"]["pointing_game_tol2px"]
        res["scores"] = {"lesion": prob[:, 0].tolist(), "y": rows["lesion"].astype(int).tolist(),
                         "patient_id": rows["patient_id"].astype(str).tolist(),
                         "case_id": rows["case_id"].astype(str).tolist(),
                         "image": [str(root / p) for p in rows["image"]],
                         "mask": [str(root / p) for p in rows["mask"]]}
        out[name] = res
    timings["evaluate_s"] = round(time.perf_counter() - t_eval, 1)
    t_heat = time.perf_counter()
    # a few heatmaps through predict-cls: lesion slices of each test group first, any test slice otherwise
    picks: list[Path] = []
    for group in (test[test["site"] != UNSEEN_SITE], test[test["site"] == UNSEEN_SITE]):
        ordered = pd.concat([group[group["lesion"] == 1], group[group["lesion"] == 0]])
        picks.extend(root / p for p in ordered["image"].head(max(1, n_heatmaps // 2)))
    if picks:
        predict_images(work / "model", picks, work / "heatmaps" / "predictions.csv", work / "heatmaps", quiet=True,
                       evidence=True)  # display-size evidence figures beside the raw overlays
    out["heatmaps"] = str(work / "heatmaps")
    timings["heatmaps_s"] = round(time.perf_counter() - t_heat, 1)
    out["timings_s"] = timings  # where the stage's time goes (data build, training, evaluation, figures)
    return out


def write_scan_predictions(res: dict[str, Any], path: Path) -> Path:
    """Per-scan table for the validation report: a scan is positive when any of its kept slices shows a
    lesion, and its probability is the highest slice probability (case_id,y_true,prob,image,mask). ``image``
    is the scan's evidence slice for the report's worst cases: its highest-scoring lesion slice when it has
    one (a miss then shows the lesion it missed), else its highest-scoring slice (a false alarm shows where)."""
    from medsight.files import atomic_write_text

    keys = ("case_id", "y", "lesion", "image", "mask")
    slices = pd.concat([pd.DataFrame({k: res[g]["scores"][k] for k in keys}) for g in ("held_out", UNSEEN_SITE)
                        if g in res]).rename(columns={"y": "y_true", "lesion": "prob"})
    table = slices.groupby("case_id", as_index=False).agg(y_true=("y_true", "max"), prob=("prob", "max"))
    evidence = slices.sort_values(["y_true", "prob"], ascending=False).drop_duplicates("case_id")
    table = table.merge(evidence[["case_id", "image", "mask"]], on="case_id", how="left")
    # paths relative to the table's folder: the report resolves them there, whatever the working directory
    folder = Path(path).resolve().parent
    for col in ("image", "mask"):
        table[col] = [os.path.relpath(Path(p).resolve(), folder) for p in table[col]]
    atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))
    return path


def run(ctx) -> dict[str, Any]:  # noqa: ANN001 - DemoContext
    """The ``medsight demo`` stage; puts the model directory in ``ctx.paths['cls_model']``."""
    threads_before = torch.get_num_threads()
    # one thread on a busy machine (as the segmentation stage): with 2 OpenMP threads on 2 shared cores an epoch
    # took minutes instead of seconds (load ~12: no epoch done after 4 minutes)
    torch.set_num_threads(min(2, threads_for_now()))
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads_before)


def _run(ctx) -> dict[str, Any]:  # noqa: ANN001 - DemoContext
    out = Path(ctx.out_dir)
    work = out / "classification"
    n = N_CASES_FAST if ctx.fast else N_CASES
    res = run_experiment(work, demo_config(ctx.seed, ctx.fast), n, ctx.seed, ctx.quiet,
                         lesion_share=CLS_LESION_SHARE)
    ctx.paths["cls_model"] = work / "model"
    ctx.paths["cls_volumes"] = work / "data" / "volumes"
    ctx.paths["cls_predictions"] = write_scan_predictions(res, work / "predictions_per_scan.csv")
    ctx.paths["cls_heatmaps"] = work / "heatmaps"
    ctx.paths["cls_manifest"] = work / "data" / "manifest_split.csv"
    summary: dict[str, Any] = {"train_seconds": res["train_seconds"], "epochs": res["epochs"],
                               "torch_threads": torch.get_num_threads(),
                               "timings_s": res["timings_s"]}
    if res.get("validation_target"):
        summary["validation_target"] = res["validation_target"]["text"]  # "below target: ..." prints in red
    for group in ("held_out", UNSEEN_SITE):
        if group in res:
            r = res[group]["lesion"]
            summary[f"{group}_lesion_auc"] = [round(r["auc"], 3), round(r["auc_lo"], 3), round(r["auc_hi"], 3)]
            if "auc_patient_lo" in r:
                summary[f"{group}_lesion_auc_patient_ci"] = [round(r["auc_patient_lo"], 3),
                                                             round(r["auc_patient_hi"], 3)]
            if "explanations" in res[group]:
                summary[f"{group}_pointing_game"] = round(res[group]["explanations"]["pointing_game"], 3)
    return summary
