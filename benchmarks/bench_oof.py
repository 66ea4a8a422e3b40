"""Claim: scoring internal test cases with the ensemble of all folds leaks (folds that trained on a case score it);
out-of-fold scoring (``medsight validate``'s default) removes the leak. Measures both on the same trained folds.

Trains a 5-fold model through the CLI (``plan`` + ``train --fold cv``) on a generated toy dataset, then scores every
case with (a) the one fold model that held it out and (b) the ensemble of all 5 folds (4 of which trained on it),
with the very code ``validate`` runs (``report.run_model.segmentation_table``), and records mean Dice per label.
    OMP_NUM_THREADS=1 python benchmarks/bench_oof.py --cases 20 --epochs 8 --iterations 6
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--record", action="store_true", help="Write the table to docs/benchmarks.md.")
    args = ap.parse_args()
    import torch
    from click.testing import CliRunner

    from medsight.cli.main import cli
    from medsight.report.run_model import segmentation_table
    from medsight.synthetic.toy import make_toy_dataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDSIGHT_HOME"] = str(Path(tmp) / "home")
        root = make_toy_dataset(Path(tmp) / "Dataset003_Oof", n_cases=args.cases, shape=(24, 20, 16), channels=1)
        run = CliRunner()
        r = run.invoke(cli, ["-q", "plan", str(root), "--memory-gb", "0.05", "--filters", "8", "--epochs",
                             str(args.epochs), "--iterations", str(args.iterations)])
        assert r.exit_code == 0, r.output
        model = Path(tmp) / "model"
        r = run.invoke(cli, ["-q", "train", str(root), "--fold", "cv", "--model-dir", str(model)])
        assert r.exit_code == 0, r.output
        train_s = time.perf_counter() - t0
        rows = {}
        for mode in ("out-of-fold", "ensemble"):
            t = segmentation_table(model, root, [], Path(tmp) / mode, quiet=True, internal=mode)
            rows[mode] = t.groupby("name")["dice"].mean().to_dict() | {"n": int(t["case_id"].nunique())}
    names = sorted(k for k in rows["out-of-fold"] if k != "n")
    lines = [
        "## Out-of-fold vs all-fold internal validation (`medsight validate`)", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_oof.py --cases {args.cases} --epochs {args.epochs} "
        f"--iterations {args.iterations} --record`. Data: generated toy volumes (24x20x16 voxels, 1 channel, "
        f"{args.cases} cases, 2 scans per patient, 5 patient-level folds); plan: 8 base filters, memory 0.05 GB, "
        f"{args.epochs} epochs x {args.iterations} iterations per fold, all 5 folds trained through the CLI "
        f"({train_s:.0f} s). Every case is an internal test case of exactly one fold. Mean Dice per label "
        "(unit: case, n = cases):", "",
        "| scoring | n | " + " | ".join(f"Dice {n}" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for mode, label in (("out-of-fold", "out-of-fold: the fold model that held the case out (validate's default)"),
                        ("ensemble", "all-fold ensemble: 4 of its 5 models trained on the case (the old leak)")):
        lines.append(f"| {label} | {rows[mode]['n']} | "
                     + " | ".join(f"{rows[mode][n]:.3f}" for n in names) + " |")
    lines += ["", f"Gap (ensemble - out-of-fold): " + ", ".join(
        f"{n} {rows['ensemble'][n] - rows['out-of-fold'][n]:+.3f}" for n in names)
        + ". Both scored in the same process on the same trained folds; " + machine_line() + "."]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("oof_validation", text)


if __name__ == "__main__":
    main()
