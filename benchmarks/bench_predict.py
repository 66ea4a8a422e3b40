"""Segmentation inference speed and Dice -> docs/benchmarks.md "predict".

Arms, on the same cases in the same process (so machine load hits them alike):
- baseline: one un-mirrored pass, PyTorch, one window per network call (the old path without mirroring);
- no TTA: ``Predictor(mirror=False)`` (batched windows, engine chosen by ``--runtime auto``);
- default: ``Predictor()`` (the mirror axes the package measured at training, inference.json);
- full mirroring: ``Predictor(mirror_axes="all")`` (every plan axis: 8 passes per window in 3D; the old default).
Cases: the demo model's held-out and unseen-site cases (Dice against their reference, hard Dice per foreground
class, mean over cases), and optionally a CT-sized volume (``--ct``, 216 x 216 x 96 voxels, speed only: the
demo model is not a CT model).

Run: python benchmarks/bench_predict.py --model medsight-out/demo/segmentation/model --data medsight-out/demo/data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402

from medsight.io.nifti import read_nifti  # noqa: E402
from medsight.segmentation.predict import Predictor  # noqa: E402


def dice(pred: np.ndarray, ref: np.ndarray, classes: list[int]) -> float:
    """Mean Dice (medsight.metrics.segmentation.dice) over the classes present in either mask."""
    from medsight.metrics.segmentation import dice as one

    vals = [one(pred == c, ref == c) for c in classes if (pred == c).any() or (ref == c).any()]
    return float(np.mean(vals)) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ct", action="store_true", help="also time a 216 x 216 x 96 CT-sized volume")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = json.loads((args.data / "dataset.json").read_text())
    splits = json.loads((args.model / "splits.json").read_text())
    ids = splits[0]["val"][: args.cases]
    arms = {"baseline (1 pass, torch, 1 window/call)": dict(mirror=False, runtime="torch", window_batch=1),
            "no TTA (batched, runtime auto)": dict(mirror=False),
            "default (measured axes)": dict(),
            "full mirroring (all plan axes)": dict(mirror_axes="all")}
    predictors = {k: Predictor(args.model, **v) for k, v in arms.items()}
    classes = sorted(int(v) for v in ds["labels"].values() if int(v) > 0) if isinstance(ds["labels"], dict) else []
    rows = {k: {"seconds": [], "dice": [], "axes": p.mirror_axes, "runtime": p.runtime} for k, p in predictors.items()}
    load0 = os.getloadavg()
    for cid in ids:
        image = read_nifti(args.data / "imagesTr" / f"{cid}_0000.nii.gz")
        ref = read_nifti(args.data / "labelsTr" / f"{cid}.nii.gz").array
        for k, p in predictors.items():
            t = time.perf_counter()
            pred = p.predict(image)
            rows[k]["seconds"].append(time.perf_counter() - t)
            rows[k]["dice"].append(dice(pred.labels.array, ref, classes))
    ct = {}
    if args.ct:
        from medsight.image import Geometry, Image

        vol = Image(np.random.default_rng(0).normal(size=(216, 216, 96)).astype(np.float32),
                    Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1))))
        for k, p in predictors.items():
            t = time.perf_counter()
            p.predict(vol)
            ct[k] = time.perf_counter() - t
    load1 = os.getloadavg()
    base = float(np.mean(rows[next(iter(rows))]["seconds"]))
    lines = ["## predict", "", machine_line() + f" torch threads: {args.threads}. Load average (1 min) "
             f"{load0[0]:.1f} at start, {load1[0]:.1f} at end: the 2-core machine was shared with parallel work, "
             "so absolute seconds are inflated; the arms ran interleaved case by case in one process, so their "
             "ratios are comparable.",
             f"Command: `python benchmarks/bench_predict.py --model {args.model} --data {args.data} --cases "
             f"{args.cases}{' --ct' if args.ct else ''}`", "",
             f"Demo model, n = {len(ids)} held-out cases (unit: case); Dice = hard Dice per foreground class, mean "
             "over classes present, mean over cases.", "",
             "| arm | mirror axes | engine | s per case (mean) | vs baseline | Dice (mean) |", "|---|---|---|---|---|---|"]
    for k, r in rows.items():
        s = float(np.mean(r["seconds"]))
        lines.append(f"| {k} | {r['axes'] or '-'} | {r['runtime']['runtime']} | {s:.2f} | {s / base:.2f}x | "
                     f"{np.nanmean(r['dice']):.4f} |")
    if ct:
        b = ct[next(iter(ct))]
        lines += ["", "CT-sized volume 216 x 216 x 96 (speed only, n = 1 volume):", "",
                  "| arm | s per volume | vs baseline |", "|---|---|---|"]
        lines += [f"| {k} | {v:.1f} | {v / b:.2f}x |" for k, v in ct.items()]
    choice = json.loads((args.model / "inference.json").read_text()) if (args.model / "inference.json").is_file() \
        else None
    if choice:
        lines += ["", f"Package choice (inference.json): mirror axes {choice['mirror_axes']}, Dice gain by axis "
                  f"{ {a: round(g, 4) for a, g in choice['gain_by_axis'].items()} } on {choice['n_cases']} "
                  f"validation case(s), minimum gain {choice['min_gain']}."]
    md = "\n".join(lines)
    print(md)
    if not args.no_record:
        record_section("predict", md)


if __name__ == "__main__":
    main()
