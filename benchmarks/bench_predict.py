"""Segmentation inference speed and Dice -> docs/benchmarks.md "predict".

Arms, on the same cases in the same process (so machine load hits them alike), each as ``predict`` runs it (its
default engine, PyTorch):
- baseline: one un-mirrored pass, PyTorch, one window per network call (the old path without mirroring);
- no TTA: ``Predictor(mirror=False)`` (batched windows);
- default: ``Predictor()`` (the mirror axes the package measured at training, inference.json);
- full mirroring: ``Predictor(mirror_axes="all")`` (every plan axis: 8 passes per window in 3D; the old default).
Cases: a package's fold-0 validation cases (``--exclude-study`` leaves out those its mirror study measured) or
``--ids`` from any labelled folder (e.g. the CT variants of benchmarks/make_ct_set.py that training never saw).
Per arm: wall and CPU seconds per case, hard Dice per foreground class against the reference.

Run: python benchmarks/bench_predict.py --model medsight-out/demo/segmentation/model --data medsight-out/demo/data
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402

from medsight.io.nifti import read_nifti  # noqa: E402
from medsight.segmentation.predict import Predictor  # noqa: E402


def class_dice(pred: np.ndarray, ref: np.ndarray, classes: list[int]) -> dict[int, float]:
    """Hard Dice (medsight.metrics.segmentation.dice) of each class present in either mask (absent: NaN)."""
    from medsight.metrics.segmentation import dice as one

    return {c: float(one(pred == c, ref == c)) if (pred == c).any() or (ref == c).any() else float("nan")
            for c in classes}


def case_ids(args: argparse.Namespace, model: Path) -> list[str]:
    """``--ids``, else the fold-0 validation cases (without the mirror study's own, with ``--exclude-study``)."""
    if args.ids:
        return args.ids.split(",")
    val = json.loads((model / "splits.json").read_text())[0]["val"]
    if args.exclude_study and (model / "inference.json").is_file():
        from medsight.segmentation.tta import STUDY_CASES

        studied = set(sorted(val)[:STUDY_CASES])  # segmentation.train.fold_mirror_study's cases
        val = [c for c in val if c not in studied]
    return val[: args.cases]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--ids", help="comma-separated case ids in --data (default: the fold-0 validation cases)")
    ap.add_argument("--exclude-study", action="store_true",
                    help="leave out the validation cases the package's mirror study measured")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write every per-case figure here (after each case)")
    ap.add_argument("--max-minutes", type=float, help="stop after the case that passes this time (n = cases done)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = json.loads((args.data / "dataset.json").read_text())
    ids = case_ids(args, args.model)
    arms = {"baseline (1 pass, torch, 1 window/call)": dict(mirror=False, runtime="torch", window_batch=1),
            "no TTA (predict --no-mirror: batched windows)": dict(mirror=False),
            "default (predict: the axes the package measured)": dict(),
            "full mirroring (every plan axis: the old default)": dict(mirror_axes="all")}
    predictors = {k: Predictor(args.model, **v) for k, v in arms.items()}
    names = {int(v): k for k, v in ds["labels"].items() if int(v) > 0}
    classes = sorted(names)
    rows = {k: {"seconds": [], "cpu_seconds": [], "dice": [], "axes": p.mirror_axes, "runtime": p.runtime}
            for k, p in predictors.items()}
    load0, up0 = os.getloadavg(), subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started, done = time.perf_counter(), []
    for cid in ids:
        if args.max_minutes and time.perf_counter() - started > 60 * args.max_minutes:
            break
        done.append(cid)
        image = read_nifti(args.data / "imagesTr" / f"{cid}_0000.nii.gz")
        ref = read_nifti(args.data / "labelsTr" / f"{cid}.nii.gz").array
        for k, p in predictors.items():
            t, c = time.perf_counter(), time.process_time()
            pred = p.predict(image)
            rows[k]["seconds"].append(time.perf_counter() - t)
            rows[k]["cpu_seconds"].append(time.process_time() - c)
            rows[k]["dice"].append(class_dice(pred.labels.array, ref, classes))
            print(cid, k, f"{rows[k]['seconds'][-1]:.2f} s", rows[k]["dice"][-1], flush=True)
        if args.json:
            args.json.write_text(json.dumps({"ids": done, "load_start": load0, "uptime_start": up0,
                                             "load_now": os.getloadavg(), "rows": rows}, indent=1, default=str))
    ids = done
    load1, up1 = os.getloadavg(), subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    base = float(np.mean(rows[next(iter(rows))]["seconds"]))
    lines = ["## predict", "", machine_line() + f" torch threads: {args.threads}. Load average (1 min) "
             f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (`uptime`: '{up0}' / '{up1}'): the 2-core machine was "
             "shared with parallel work, so absolute seconds are inflated; the arms ran interleaved case by case in "
             "one process, so their ratios are comparable.",
             f"Command: `python benchmarks/bench_predict.py --model {args.model} --data {args.data} "
             + (f"--ids {args.ids}`" if args.ids
                else f"--cases {args.cases}{' --exclude-study' * args.exclude_study}`"),
             "", f"n = {len(ids)} cases (unit: case); Dice = hard Dice per foreground class, mean over cases where the "
             "class is present in the reference or the prediction.", "",
             "| arm | mirror axes | engine | s per case (mean) | CPU s per case | vs baseline | "
             + " | ".join(f"Dice {names[c]}" for c in classes) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(classes)]
    for k, r in rows.items():
        s = float(np.mean(r["seconds"]))
        dice_cells = [np.nanmean([d[c] for d in r["dice"]]) for c in classes]
        lines.append(f"| {k} | {r['axes'] or '-'} | {r['runtime']['runtime']} | {s:.2f} | "
                     f"{np.mean(r['cpu_seconds']):.2f} | {s / base:.2f}x | "
                     + " | ".join(f"{v:.4f}" for v in dice_cells) + " |")
    choice = json.loads((args.model / "inference.json").read_text()) if (args.model / "inference.json").is_file() \
        else None
    if choice:
        lines += ["", f"Package choice (inference.json): mirror axes {choice['mirror_axes']}, Dice gain by axis "
                  f"{ {a: round(g, 4) for a, g in choice['gain_by_axis'].items()} } on {choice['n_cases']} "
                  f"validation case(s), minimum gain {choice['min_gain']}."]
    md = "\n".join(lines)
    print(md)
    if args.json:
        args.json.write_text(json.dumps({"ids": ids, "load": [load0, load1], "uptime": [up0, up1],
                                         "rows": rows, "markdown": md}, indent=1, default=str))
    if not args.no_record:
        record_section("predict", md)


if __name__ == "__main__":
    main()
