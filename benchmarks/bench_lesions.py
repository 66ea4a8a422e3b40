"""Claim under test: on the demo generator with ``enhancing`` lesions, a CPU-sized model trained for at most
``--train-seconds`` learns the lesion class: lesion Dice >= 0.60 on held-out cases with a lesion, lesion-wise
sensitivity >= 0.80 at <= 1 false-positive lesion per case, grey/white-matter Dice >= 0.90. The ``faint`` profile
is run beside it with the same settings.

Split: the demo's (fold 0 of 5 over the training sites = held-out; every site_C case = unseen site). Each run
builds (or reuses) the data, plans with the demo's CPU budget, trains one fold, predicts with left-right
mirroring, and scores voxel Dice per class and lesion-wise metrics (``medsight.metrics.lesions``).

    nice -n 10 .venv/bin/python benchmarks/bench_lesions.py --profiles enhancing faint --seeds 0 \
        --train-seconds 600 --record
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_once(out: Path, profile: str, seed: int, train_seconds: float, epochs: int, iterations: int,
             config: str = "3d", n_cases: int = 40, data_seed: int = 0) -> dict[str, Any]:
    """Train one fold and evaluate it; returns the summary numbers (also written to out/result.json)."""
    import torch

    from medsight.data.dataset import load_dataset
    from medsight.data.fingerprint import compute_fingerprint
    from medsight.data.splits import dataset_folds
    from medsight.demo.segmentation import BASE_FILTERS, MEMORY_GB
    from medsight.engine.threads import threads_for_now
    from medsight.plan.planner import make_plan
    from medsight.segmentation.train import train_fold
    from medsight.synthetic.demo import TRAINING_SITES, UNSEEN_SITE, build_demo_dataset

    torch.set_num_threads(threads_for_now())
    data = build_demo_dataset(out.parent / f"data_{profile}_{data_seed}", n_cases=n_cases, seed=data_seed,
                              quiet=True, lesion_profile=profile)
    ds = load_dataset(data)
    fp = compute_fingerprint(ds.subset([c.case_id for c in ds.cases if c.site in TRAINING_SITES]), seed=data_seed)
    plan = make_plan(fp, memory_gb=MEMORY_GB, base_filters=BASE_FILTERS, epochs=epochs,
                     iterations_per_epoch=iterations)
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    plan.save(model_dir / "plan.json")
    (model_dir / "dataset.json").write_bytes((data / "dataset.json").read_bytes())
    fold = dataset_folds(ds, 5, data_seed, sites=TRAINING_SITES)[0]
    t = time.perf_counter()
    summary = train_fold(ds, plan, config, 0, model_dir, fold["train"], fold["val"], seed=seed,
                         max_seconds=train_seconds, quiet=True)
    train_s = time.perf_counter() - t
    groups: dict[str, list[str]] = {"held_out": list(fold["val"]),
                                    "unseen_site": [c.case_id for c in ds.cases if c.site == UNSEEN_SITE]}
    res: dict[str, Any] = {"profile": profile, "seed": seed, "config": config, "train_seconds": round(train_s, 1),
                           "epochs_done": summary["epochs_done"], "epochs_planned": epochs,
                           "iterations_per_epoch": iterations, "patch_size": plan.config(config).patch_size,
                           "torch_threads": torch.get_num_threads()}
    t = time.perf_counter()
    res.update(evaluate(model_dir, ds, groups, seed))
    res["predict_seconds"] = round(time.perf_counter() - t, 1)
    (out / "result.json").write_text(json.dumps(res, indent=2))
    return res


def evaluate(model_dir: Path, ds: Any, groups: dict[str, list[str]], seed: int) -> dict[str, Any]:
    """Voxel Dice per class and lesion-wise metrics of the model in ``model_dir`` on each group of cases."""
    from medsight.demo.segmentation import OVERLAP
    from medsight.io.nifti import read_nifti
    from medsight.metrics.lesions import case_lesions, summarise_lesions
    from medsight.metrics.segmentation import dice
    from medsight.segmentation.predict import Predictor
    from medsight.synthetic.demo import LABELS

    predictor = Predictor(model_dir, mirror_axes=[0], overlap=OVERLAP)
    lesion = LABELS["lesion"]
    res: dict[str, Any] = {}
    diameters = _diameters(ds)
    for group, ids in groups.items():
        cases, per = [], {"grey_matter": [], "white_matter": [], "lesion": []}
        small = []  # (found, diameter) of each case whose simulated lesion is <= SMALL_MM across
        for cid in ids:
            case = ds.case(cid)
            pred = predictor.predict(read_nifti(case.images[0]))
            ref = read_nifti(case.label).array
            lab = pred.labels.array
            per["grey_matter"].append(dice(lab == 1, ref == 1))
            per["white_matter"].append(dice(lab == 2, ref == 2))
            if (ref == lesion).any():
                per["lesion"].append(dice(lab == lesion, ref == lesion))
            cases.append(case_lesions(lab == lesion, ref == lesion, read_nifti(case.label).spacing, cid,
                                      case.patient_id, pred.probabilities[lesion]))
            if (ref == lesion).any() and 0 < diameters.get(cid, 0.0) <= SMALL_MM:
                small.append(any(r["matched_pred"] for r in cases[-1].ref))
        s = summarise_lesions(cases, n_boot=200, seed=seed)
        for k, v in per.items():
            res[f"{group}_dice_{k}"] = round(float(np.mean(v)), 4) if v else None
        res[f"{group}_lesion_cases"] = len(per["lesion"])
        res[f"{group}_lesion_dice_each"] = [round(v, 3) for v in per["lesion"]]
        res[f"{group}_lesion_sensitivity"] = s["metrics"]["sensitivity"]["value"]
        res[f"{group}_lesion_fp_per_case"] = s["metrics"]["fp_per_case"]["value"]
        res[f"{group}_lesion_sensitivity_at_1fp"] = s["froc"]["sensitivity_at_1fp"]
        res[f"{group}_lesion_f1"] = s["metrics"]["f1"]["value"]
        res[f"{group}_small_lesions_found"] = f"{sum(small)}/{len(small)}"
    return res


SMALL_MM = 6.0  # the "3-6 mm" lesions: found = any predicted lesion matched to the case's lesion


def _diameters(ds: Any) -> dict[str, float]:
    """Each case's simulated lesion diameter (mm) from the generator's manifest.csv (0 without a lesion)."""
    import csv

    path = Path(ds.root) / "manifest.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["case_id"]: float(r.get("lesion_diameter_mm") or 0.0) for r in csv.DictReader(f)}


def evaluate_fresh(result_dir: Path, data_seed: int, n_cases: int = 40) -> dict[str, Any]:
    """Score a finished run's model on a freshly generated dataset (other patients, same generator and profile):
    the demo split holds 1 held-out and 2 site_C cases with a lesion, too few to say anything alone."""
    from medsight.data.dataset import load_dataset
    from medsight.synthetic.demo import TRAINING_SITES, UNSEEN_SITE, build_demo_dataset

    res = json.loads((result_dir / "result.json").read_text())
    data = build_demo_dataset(result_dir.parent / f"data_{res['profile']}_{data_seed}", n_cases=n_cases,
                              seed=data_seed, quiet=True, lesion_profile=res["profile"])
    ds = load_dataset(data)
    groups = {"fresh_training_sites": [c.case_id for c in ds.cases if c.site in TRAINING_SITES],
              "fresh_site_C": [c.case_id for c in ds.cases if c.site == UNSEEN_SITE]}
    t = time.perf_counter()
    res.update(evaluate(result_dir / "model", ds, groups, res["seed"]))
    res["fresh_data_seed"], res["fresh_predict_seconds"] = data_seed, round(time.perf_counter() - t, 1)
    (result_dir / "result.json").write_text(json.dumps(res, indent=2))
    return res


def _median(rows: list[dict[str, Any]], key: str, digits: int = 3) -> str:
    vals = [r[key] for r in rows if r.get(key) is not None and not np.isnan(r[key])]
    return f"{statistics.median(vals):.{digits}f}" if vals else "n/a"


def _found(rows: list[dict[str, Any]], key: str) -> str:
    """'a/b' counts summed over the runs (each run scores the same cases)."""
    pairs = [tuple(int(v) for v in r[key].split("/")) for r in rows if r.get(key)]
    return f"{sum(a for a, _ in pairs)}/{sum(b for _, b in pairs)}" if pairs else "n/a"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| profile | config | seeds | train s (median) | epochs | held-out lesion Dice (n cases) | "
            "held-out lesion sens. / FP per case | sens. at <= 1 FP/case | held-out GM / WM Dice | "
            "site_C lesion Dice (n) | site_C sens. at <= 1 FP | fresh cases: lesion Dice (n) | fresh: sens. / FP per case | "
            "fresh: sens. at <= 1 FP | fresh: lesions <= 6 mm found (seed-cases) | fresh: GM / WM Dice | "
            "fresh site_C: lesion Dice (n) / sens. at <= 1 FP |\n|" + "---|" * 17)
    lines = [head]
    keys = sorted({(r["profile"], r["config"]) for r in rows})
    for prof, cfg in keys:
        rs = [r for r in rows if r["profile"] == prof and r["config"] == cfg]
        lines.append(
            f"| {prof} | {cfg} | {','.join(str(r['seed']) for r in rs)} | {_median(rs, 'train_seconds', 0)} | "
            f"{rs[0]['epochs_done']}/{rs[0]['epochs_planned']} x {rs[0]['iterations_per_epoch']} | "
            f"{_median(rs, 'held_out_dice_lesion')} ({rs[0]['held_out_lesion_cases']}) | "
            f"{_median(rs, 'held_out_lesion_sensitivity')} / {_median(rs, 'held_out_lesion_fp_per_case')} | "
            f"{_median(rs, 'held_out_lesion_sensitivity_at_1fp')} | "
            f"{_median(rs, 'held_out_dice_grey_matter')} / {_median(rs, 'held_out_dice_white_matter')} | "
            f"{_median(rs, 'unseen_site_dice_lesion')} ({rs[0]['unseen_site_lesion_cases']}) | "
            f"{_median(rs, 'unseen_site_lesion_sensitivity_at_1fp')} | "
            f"{_median(rs, 'fresh_training_sites_dice_lesion')} ({rs[0].get('fresh_training_sites_lesion_cases', 0)}) | "
            f"{_median(rs, 'fresh_training_sites_lesion_sensitivity')} / "
            f"{_median(rs, 'fresh_training_sites_lesion_fp_per_case')} | "
            f"{_median(rs, 'fresh_training_sites_lesion_sensitivity_at_1fp')} | "
            f"{_found(rs, 'fresh_training_sites_small_lesions_found')} | "
            f"{_median(rs, 'fresh_training_sites_dice_grey_matter')} / "
            f"{_median(rs, 'fresh_training_sites_dice_white_matter')} | "
            f"{_median(rs, 'fresh_site_C_dice_lesion')} ({rs[0].get('fresh_site_C_lesion_cases', 0)}) / "
            f"{_median(rs, 'fresh_site_C_lesion_sensitivity_at_1fp')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["enhancing", "faint"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--configs", nargs="+", default=["3d"])
    ap.add_argument("--train-seconds", type=float, default=600.0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("medsight-out/bench_lesions"))
    ap.add_argument("--from-results", nargs="*", type=Path, default=None,
                    help="Record result.json files of runs already made instead of running.")
    ap.add_argument("--evaluate-fresh", type=int, default=None, metavar="DATA_SEED",
                    help="With --from-results: also score each run's model on a fresh dataset of this data seed.")
    ap.add_argument("--record", action="store_true", help="Write the table to docs/benchmarks.md.")
    ap.add_argument("--note", default="", help="Paragraph recorded under the table (what limits the result).")
    ap.add_argument("--command", default=None, help="The command that made the results (with --from-results).")
    args = ap.parse_args()
    if args.from_results:
        rows = [json.loads(p.read_text()) for p in args.from_results]
        if args.evaluate_fresh is not None:
            rows = [r if r.get("fresh_data_seed") == args.evaluate_fresh else evaluate_fresh(p.parent, args.evaluate_fresh)
                    for p, r in zip(args.from_results, rows)]
    else:
        rows = []
        for prof in args.profiles:
            for cfg in args.configs:
                for seed in args.seeds:
                    out = args.out / f"{prof}_{cfg}_seed{seed}"
                    r = run_once(out, prof, seed, args.train_seconds, args.epochs, args.iterations, cfg)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    md = table(rows)
    print(md)
    if args.record:
        from _record import machine_line, record_section

        command = args.command or "python " + " ".join(sys.argv)
        per_run = "\n".join(f"- {r['profile']} {r['config']} seed {r['seed']}: held-out lesion Dice per case "
                             f"{r['held_out_lesion_dice_each']}, site_C {r['unseen_site_lesion_dice_each']}, fresh cases "
                             f"{r.get('fresh_training_sites_lesion_dice_each', 'not run')}; "
                             f"{r['epochs_done']}/{r['epochs_planned']} epochs, train {r['train_seconds']} s, predict {r['predict_seconds']} s, "
                             f"{r['torch_threads']} torch thread(s)" for r in rows)
        record_section("lesions", f"## Lesions: learning the lesion class (benchmarks/bench_lesions.py)\n\n"
                       f"{machine_line()} Timings on a shared, heavily loaded 2-core machine (other engineers' jobs "
                       f"ran beside it): wall seconds are upper bounds, not the tool's speed.\n"
                       f"Command: `{command}`\n\n"
                       "Data: the demo generator (40 cases, data seed 0), fold 0 of the training sites = held-out, "
                       "every site_C case = unseen site; plan with the demo's CPU budget (0.5 GB, 8 base filters, "
                       "3D patch 48x64x64; 2.5D 80x112 with 2 neighbouring slices each side); 'fresh cases' = a second "
                       "generated dataset (data seed 1: other simulated patients, 14 training-site and 6 site_C cases "
                       "with a lesion) scored with the same models; prediction with left-right mirroring, overlap 0.25. Lesion Dice: mean over "
                       "cases with a reference lesion. Lesion-wise: components matched at IoU > 0.1 "
                       "(docs/metrics.md); 'sens. at <= 1 FP/case' = best FROC operating point with at most one "
                       "false-positive lesion per case, lesions scored by their maximum probability. Medians over "
                       f"the seeds listed.\n\n{md}\n\n{per_run}\n\n{args.note}\n")


if __name__ == "__main__":
    main()
