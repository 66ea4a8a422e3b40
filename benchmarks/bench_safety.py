"""Benchmark of the clinical safety layer: calibration, OOD detection, referral and risk-coverage.

Runs the whole safety evaluation (``medsight.demo.safety_task``) for several seeds and records, in the "safety"
section of docs/benchmarks.md: ECE before/after temperature scaling, every OOD detector on every OOD set (AUROC,
FPR at 95% TPR), referral keep rates, and the unseen site's risk at 80% vs 100% coverage.

    .venv/bin/python benchmarks/bench_safety.py [--seeds 3] [--cls-model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import machine_line, record_section  # noqa: E402

from medsight.synthetic.ood_sets import CORRUPTIONS, SOURCES, corrupt  # noqa: E402
from medsight.demo.safety_task import build_safety_task  # noqa: E402


def one_run(seed: int, cls_model: Path | None) -> dict:
    with TemporaryDirectory() as tmp:
        task = build_safety_task(cls_model, seed=seed, work_dir=Path(tmp))
        held = task.tests[task.in_distribution][0]
        for kind in CORRUPTIONS:  # per-corruption breakdown besides the mixed "corrupted" set
            task.ood[f"corrupted: {kind} only"] = [corrupt(im, kind, seed=seed + i) for i, im in enumerate(held)]
        t = time.perf_counter()
        res = task.evaluate()
        res["seconds"] = time.perf_counter() - t
        res["unseen"] = task.unseen
        return res


def _med(values: list[float]) -> str:
    m = statistics.median(values)
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cls-model", type=Path, default=None, help="project classifier model dir (default: reference task)")
    args = ap.parse_args()
    runs = []
    for seed in range(args.seeds):
        t = time.perf_counter()
        runs.append(one_run(seed, args.cls_model))
        print(f"seed {seed}: {time.perf_counter() - t:.1f} s", flush=True)
    r0 = runs[0]
    unseen = r0["unseen"]
    lines = [
        machine_line(),
        f"Command: `.venv/bin/python benchmarks/bench_safety.py --seeds {args.seeds}"
        + (f" --cls-model {args.cls_model}`" if args.cls_model else "`"),
        f"Classifier: {r0['source']}. Figures: median over {len(runs)} seed(s) (min–max), each seed a fresh "
        "dataset and model.",
        "",
        "Sets (n per seed): " + ", ".join(f"{k} {v}" for k, v in r0["n"].items()) + ".",
        f"In-distribution reference for OOD metrics: held-out cases of the training sites. different_modality: "
        f"{len(SOURCES)} real DICOM images shipped with pydicom/pydicom-data (CT head/neck/pancreas, chest and "
        "extremity CR, shoulder/abdomen MR, US, NM), 4 views each (whole, centre and two corner crops), resampled "
        "by the model's preprocess. corrupted: each held-out image once with Gaussian noise (sigma = foreground "
        "std), Gaussian blur (sigma = 2.5% of the side) or intensity inversion, in turn.",
        "",
        "**Calibration** (ECE, 15 uniform bins, temperature fitted by LBFGS on validation NLL)",
        "",
        "| set | ECE before | ECE after |",
        "|---|---|---|",
    ]
    for name in r0["calibration"]:
        lines.append(f"| {name} | {_med([r['calibration'][name]['ece_before'] for r in runs])} | "
                     f"{_med([r['calibration'][name]['ece_after'] for r in runs])} |")
    dets = list(next(iter(r0["ood"].values())))
    pretty = {"msp": "MSP", "energy": "energy", "mahalanobis": "Mahalanobis", "mc_dropout_mi": "MC-dropout MI"}
    lines += ["", "**OOD detection** (OOD = positive; AUROC, then FPR at 95% TPR; MC-dropout MI: mutual information "
              "over 10 dropout passes)", "",
              "| set | " + " | ".join(f"{pretty.get(d, d)} AUROC" for d in dets) + " | "
              + " | ".join(f"{pretty.get(d, d)} FPR95" for d in dets) + " |",
              "|---|" + "---|" * (2 * len(dets))]
    for name in r0["ood"]:
        a = [_med([r["ood"][name][d]["auroc"] for r in runs]) for d in dets]
        f = [_med([r["ood"][name][d]["fpr_at_95tpr"] for r in runs]) for d in dets]
        lines.append(f"| {name} | " + " | ".join(a + f) + " |")
    lines += ["", "**Referral** (thresholds on validation: low confidence = calibrated 1 − MSP, out of distribution "
              "= Mahalanobis; joint target 95% of validation cases kept)", "", "| set | share accepted |", "|---|---|"]
    for name in r0["referral"]:
        if name != "thresholds":
            lines.append(f"| {name} | {_med([r['referral'][name]['kept'] for r in runs])} |")
    lines += ["", "**Risk-coverage** (error of the decision at the model's threshold among the most confident "
              "cases)", "", "| set | error at 100% coverage | error at 80% coverage | AURC |", "|---|---|---|---|"]
    for name in r0["risk_coverage"]:
        lines.append(f"| {name} | {_med([r['risk_coverage'][name]['error_at_100'] for r in runs])} | "
                     f"{_med([r['risk_coverage'][name]['error_at_80'] for r in runs])} | "
                     f"{_med([r['risk_coverage'][name]['aurc'] for r in runs])} |")
    best = lambda s: statistics.median(max(r["ood"][s][d]["auroc"] for d in r["ood"][s]) for r in runs)  # noqa: E731
    ece_ok = all(r["calibration"]["held_out"]["ece_after"] < r["calibration"]["held_out"]["ece_before"] for r in runs)
    rc_ok = all(r["risk_coverage"][unseen]["error_at_80"] < r["risk_coverage"][unseen]["error_at_100"] for r in runs)
    lines += ["", "Acceptance: "
              f"ECE lower after scaling on held-out data in {'every' if ece_ok else 'NOT every'} seed; "
              f"best detector AUROC different_modality {best('different_modality'):.3f} (≥ 0.95), "
              f"corrupted {best('corrupted'):.3f} (≥ 0.80); {unseen} error at 80% coverage lower than at 100% in "
              f"{'every' if rc_ok else 'NOT every'} seed. Evaluation time per seed (model already trained): "
              f"{_med([r['seconds'] for r in runs])} s."]
    md = "## Safety layer: calibration, OOD detection, referral\n\n" + "\n".join(lines)
    print(md)
    record_section("safety", md)


if __name__ == "__main__":
    main()
