"""Claim: ``medsight calibrate`` lowers the ECE of a classifier on held-out patients and stores an operating point
that is reproduced from the calibrated probabilities of its calibration split.

Trains a small classifier with ``medsight train-cls`` (noise images with a bright square, the tests' generator),
calibrates it on images of new patients with ``medsight calibrate``, and records the check split's ECE and Brier
before/after (n, unit) and the threshold re-derived independently from ``calibration_predictions.json``.
    OMP_NUM_THREADS=1 python benchmarks/bench_calibrate.py --train 96 --unseen 160 --epochs 4 --record

``--demo DIR`` calibrates the classifier of a finished ``medsight demo`` (DIR = its --out) instead: the package is
copied, DATA is the demo manifest's held-out test slices of the training sites (patients used neither for training
nor for early stopping), and the section ``calibrate_demo`` is recorded:
    OMP_NUM_THREADS=1 python benchmarks/bench_calibrate.py --demo medsight-out/demo --record
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402

_GEN = Path(__file__).resolve().parent.parent / "tests" / "classification" / "conftest.py"


def _generator():  # noqa: ANN202 - the tests' square-image writer
    spec = importlib.util.spec_from_file_location("_squares", _GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.write_square_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=96)
    ap.add_argument("--unseen", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--demo", type=Path, default=None, help="a finished demo's --out folder")
    args = ap.parse_args()
    if args.demo is not None:
        demo(args.demo, args.record)
        return
    from medsight.cli.main import main as cli
    from medsight.package import load_package

    write = _generator()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["MEDSIGHT_HOME"] = str(tmp / "home")
        train, _ = write(tmp / "train", n=args.train, size=32, side=8, seed=0)
        unseen, _ = write(tmp / "unseen", n=args.unseen, size=32, side=8, seed=7)
        t = pd.read_csv(unseen)
        t["patient_id"] = "Q" + t["patient_id"].str[1:]  # other patients than the training run's
        t.to_csv(unseen, index=False)
        for argv in (["-q", "train-cls", str(train), "--out", str(tmp / "pkg"), "--backbone", "resnet10-slim",
                      "--input-size", "32,32", "--epochs", str(args.epochs), "--batch-size", "16", "--name", "sq",
                      "--val-fraction", "0.5"],
                     ["-q", "calibrate", "sq@1", str(unseen), "-o", str(tmp / "cal")]):
            try:
                cli(argv)
            except SystemExit as err:
                assert not err.code, argv
        new = load_package(tmp / "cal")
        rep = new.read_json("calibration_report.json")
        temp = new.read_json("calibration.json")["temperature"]["square"]
        stored, rederived = rederive(new, "square", 0, rep["target_sensitivity"])
    sp, unit = rep["splits"], rep["unit"]
    lines = [
        "## `medsight calibrate` (classifier calibration on unseen patients)", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_calibrate.py --train {args.train} --unseen "
        f"{args.unseen} --epochs {args.epochs} --record`. Model: `train-cls` resnet10-slim, 32x32, {args.epochs} "
        f"epochs on {args.train} noise images with a bright square (half the patients for validation / early "
        f"stopping); calibration data: {args.unseen} images of other patients, split by patient into a "
        "calibration and a check part (`--check-share 0.5`). Not the demo's classifier (that is the next section, "
        "`--demo`). Temperature T = " + f"{temp:.3f}.", "",
        "| split | n (images) | patients | ECE before | ECE after | Brier before | Brier after |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("calibration", "check"):
        b, a = rep[f"{name}_split"]["before"], rep[f"{name}_split"]["after"]
        lines.append(f"| {name}{' (held out: nothing fitted)' if name == 'check' else ' (fitted here)'} | "
                     f"{sp[name]['n']} | {sp[name]['patients']} | {b['ece']:.4f} | {a['ece']:.4f} | "
                     f"{b['brier']:.4f} | {a['brier']:.4f} |")
    lines += ["", f"Operating point (sensitivity >= {rep['target_sensitivity']:g}, unit {unit}): stored "
              f"{stored:.6f}, re-derived independently from the calibration split's stored logits {rederived:.6f} "
              f"({'reproduced' if abs(stored - rederived) < 1e-6 else 'DIFFERS'}). ECE: 15 equal-width bins. "
              + machine_line() + " Machine shared with other jobs (load average ~20 on 2 cores)."]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(rep["check_split"]))
    if args.record:
        record_section("calibrate", text)


def rederive(new, label: str, j: int, target: float) -> tuple[float, float]:  # noqa: ANN001 - Package
    """(stored threshold, threshold re-derived here from the stored calibration-split logits and temperature):
    the highest calibrated probability that still flags ``ceil(target * positives)`` positives."""
    cal = new.read_json("calibration_predictions.json")
    temp = new.read_json("calibration.json")["temperature"][label]
    z, y = np.asarray(cal["logits"])[:, j], np.asarray(cal["y"])[:, j]
    p = 1 / (1 + np.exp(-z / temp))
    k = int(np.ceil(target * y.sum()))
    return float(new.read_json("config.json")["thresholds"][label]), float(np.sort(p[y == 1])[::-1][k - 1])


def demo(out: Path, record: bool) -> None:
    """Calibrate the demo's classifier on its held-out test slices (training sites) and record the section."""
    import shutil
    import time

    from medsight.cli.main import main as cli
    from medsight.package import load_package

    data = out.resolve() / "classification" / "data"
    cls_summary = json.loads((out / "summary.json").read_text())["results"]["classification"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["MEDSIGHT_HOME"] = str(tmp / "home")
        shutil.copytree(out / "classification" / "model", tmp / "pkg")
        parent = load_package(tmp / "pkg")  # verified: the demo's package as the demo wrote it
        t = pd.read_csv(data / "manifest_split.csv")
        sites = sorted(t.loc[t["split"] == "train", "site"].unique())
        t = t[(t["split"] == "test") & t["site"].isin(sites)].drop(columns=["split"])
        for col in ("image", "mask"):
            t[col] = [str(data / v) for v in t[col]]
        t.to_csv(tmp / "held_out.csv", index=False)
        start = time.perf_counter()
        try:
            cli(["-q", "calibrate", str(tmp / "pkg"), str(tmp / "held_out.csv"), "-o", str(tmp / "cal"),
                 "--unit", "slice"])
        except SystemExit as err:
            assert not err.code, err
        seconds = time.perf_counter() - start
        new = load_package(tmp / "cal")
        rep = new.read_json("calibration_report.json")
        labels = new.read_json("config.json")["labels"]
        temps = new.read_json("calibration.json")["temperature"]
        points = {lab: rederive(new, lab, j, rep["target_sensitivity"]) for j, lab in enumerate(labels)}
    sp, unit = rep["splits"], rep["unit"]
    lines = [
        "## `medsight calibrate` on the demo's classifier", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_calibrate.py --demo DEMO_OUT --record` on the package "
        f"of a full `medsight demo` (seed 0; package id {parent.id[:12]}; {cls_summary['epochs']} epochs, held-out "
        f"lesion AUC {cls_summary['held_out_lesion_auc'][0]}; resnet10-slim-evidence, labels {', '.join(labels)}). "
        "DATA: the demo manifest's held-out test slices of the training sites "
        f"({', '.join(sites)}): patients used neither for training nor for early stopping; `calibrate` splits them "
        "by patient into a calibration part (temperature fitted, thresholds re-derived, referral rule fitted) and a "
        "check part (`--check-share 0.5`, nothing fitted). Temperature T: "
        + ", ".join(f"{k} {v:.3f}" for k, v in temps.items()) + f". `calibrate` took {seconds:.0f} s.", "",
        f"| split | n ({unit}s) | patients | label | ECE before | ECE after | Brier before | Brier after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("calibration", "check"):
        b, a = rep[f"{name}_split"]["before"], rep[f"{name}_split"]["after"]
        per = [(lab, b.get("per_label", {}).get(lab), a.get("per_label", {}).get(lab)) for lab in labels]
        rows = [("all labels", b, a)] + [(lab, pb, pa) for lab, pb, pa in per if pb and pa]
        for lab, bb, aa in rows:
            lines.append(f"| {name}{' (held out: nothing fitted)' if name == 'check' else ' (fitted here)'} | "
                         f"{sp[name]['n']} | {sp[name]['patients']} | {lab} | {bb['ece']:.4f} | {aa['ece']:.4f} | "
                         f"{bb['brier']:.4f} | {aa['brier']:.4f} |")
    ops = "; ".join(f"{lab}: stored {st:.6f}, re-derived {rd:.6f} "
                    f"({'reproduced' if abs(st - rd) < 1e-6 else 'DIFFERS'})" for lab, (st, rd) in points.items())
    lines += ["", f"Operating points (sensitivity >= {rep['target_sensitivity']:g} per label, unit {unit}), re-derived "
              f"independently from the package's calibration-split logits and temperature: {ops}. ECE: 15 "
              "equal-width bins. " + machine_line() + f" Machine shared with other jobs (load average "
              f"{os.getloadavg()[0]:.0f} on 2 cores at the end of the run)."]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(rep["check_split"]))
    if record:
        record_section("calibrate_demo", text)


if __name__ == "__main__":
    main()
