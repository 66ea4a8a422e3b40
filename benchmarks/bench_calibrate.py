"""Claim: ``medsight calibrate`` lowers the ECE of a classifier on held-out patients and stores an operating point
that is reproduced from the calibrated probabilities of its calibration split.

Trains a small classifier with ``medsight train-cls`` (noise images with a bright square, the tests' generator),
calibrates it on images of new patients with ``medsight calibrate``, and records the check split's ECE and Brier
before/after (n, unit) and the threshold re-derived independently from ``calibration_predictions.json``.
    OMP_NUM_THREADS=1 python benchmarks/bench_calibrate.py --train 96 --unseen 160 --epochs 4 --record
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
    args = ap.parse_args()
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
        cal = new.read_json("calibration_predictions.json")
        temp = new.read_json("calibration.json")["temperature"]["square"]
        z, y = np.asarray(cal["logits"])[:, 0], np.asarray(cal["y"])[:, 0]
        p = 1 / (1 + np.exp(-z / temp))
        k = int(np.ceil(rep["target_sensitivity"] * y.sum()))
        rederived = float(np.sort(p[y == 1])[::-1][k - 1])
        stored = new.read_json("config.json")["thresholds"]["square"]
    sp, unit = rep["splits"], rep["unit"]
    lines = [
        "## `medsight calibrate` (classifier calibration on unseen patients)", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_calibrate.py --train {args.train} --unseen "
        f"{args.unseen} --epochs {args.epochs} --record`. Model: `train-cls` resnet10-slim, 32x32, {args.epochs} "
        f"epochs on {args.train} noise images with a bright square (half the patients for validation / early "
        f"stopping); calibration data: {args.unseen} images of other patients, split by patient into a "
        "calibration and a check part (`--check-share 0.5`). Not the demo's classifier: the full demo did not fit "
        "this session's loaded machine. Temperature T = " + f"{temp:.3f}.", "",
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


if __name__ == "__main__":
    main()
