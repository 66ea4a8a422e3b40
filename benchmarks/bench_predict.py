"""Segmentation inference speed and Dice -> docs/benchmarks.md "predict".

Arms, on the same cases in the same process (so machine load hits them alike), each as ``predict`` runs it (its
default engine, PyTorch):
- baseline (only with ``--baseline``): one un-mirrored pass at overlap 0.5, one window per network call;
- no TTA: ``Predictor(mirror=False, overlap=0.5)`` (batched windows);
- default: ``Predictor()`` (the window overlap and set of flips the package chose at training, inference.json);
- full mirroring: ``Predictor(mirror_axes="all", overlap=0.5)`` (every plan axis: 8 passes per window in 3D; the
  old default and the study's reference).
Per arm also the network window passes per case, counted from the plan-grid shape (segmentation/tta_study.py).
Cases: a package's fold-0 validation cases (``--exclude-study`` leaves out those its mirror study measured), its
held-out test cohort (``--split test``: splits.json's ``test``, in no fold), or ``--ids`` from any labelled folder (e.g. the CT variants of benchmarks/make_ct_set.py that training never saw).
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

from medsight.data.preprocess import preprocess_image  # noqa: E402
from medsight.io.nifti import read_nifti  # noqa: E402
from medsight.segmentation.predict import Predictor  # noqa: E402
from medsight.segmentation.tta_study import case_windows, row_flips  # noqa: E402


def class_dice(pred: np.ndarray, ref: np.ndarray, classes: list[int]) -> dict[int, float]:
    """Hard Dice (medsight.metrics.segmentation.dice) of each class present in either mask (absent: NaN)."""
    from medsight.metrics.segmentation import dice as one

    return {c: float(one(pred == c, ref == c)) if (pred == c).any() or (ref == c).any() else float("nan")
            for c in classes}


def flips_text(flips) -> str:  # noqa: ANN001 - lists or tuples of axes
    """A set of flips as the docs write it: '-' for the identity, e.g. '-, 2, 0+2'."""
    return ", ".join("+".join(str(a) for a in f) or "-" for f in flips)


def case_ids(args: argparse.Namespace, model: Path) -> list[str]:
    """``--ids``, the test cohort (``--split test``), else the fold-0 validation cases (without the mirror study's
    own, with ``--exclude-study``)."""
    if args.ids:
        return args.ids.split(",")
    if args.split == "test":
        return list(json.loads((model / "splits.json").read_text())[0].get("test", []))[: args.cases]
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
    ap.add_argument("--split", choices=("val", "test"), default="val",
                    help="test: the package's held-out test cohort (splits.json 'test', in no fold)")
    ap.add_argument("--exclude-study", action="store_true",
                    help="leave out the validation cases the package's mirror study measured")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write every per-case figure here (after each case)")
    ap.add_argument("--max-minutes", type=float, help="stop after the case that passes this time (n = cases done)")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--baseline", action="store_true", help="also the old one-window-per-call un-mirrored arm")
    ap.add_argument("--arm", action="append", default=[], metavar="OVERLAP:AXES",
                    help="an extra arm, e.g. 0.25: (no mirroring at overlap 0.25), 0.25:0,2 (every combination of "
                         "axes 0 and 2) or 0.25:flips=/0,2/1,2 (exactly these flips; empty = the identity)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = json.loads((args.data / "dataset.json").read_text())
    ids = case_ids(args, args.model)
    arms = {**({"baseline (1 pass, torch, 1 window/call)": dict(mirror=False, runtime="torch", window_batch=1,
                                                                  overlap=0.5)} if args.baseline else {}),
            "no TTA (predict --no-mirror, overlap 0.5)": dict(mirror=False, overlap=0.5),
            "**default** (predict: the package's overlap and flips)": dict(),
            "full mirroring at overlap 0.5 (the old default)": dict(mirror_axes="all", overlap=0.5)}
    for arm in args.arm:
        o, _, a = arm.partition(":")
        if a.startswith("flips="):  # e.g. 0.25:flips=/0,2/1,2 -> the identity, axes 0+2, axes 1+2
            flips = [[int(x) for x in f.split(",") if x.strip()] for f in a[len("flips="):].split("/")]
            arms[f"overlap {float(o):g}, flips {flips_text(flips)}"] = dict(overlap=float(o), flips=flips)
            continue
        axes = [int(x) for x in a.split(",") if x.strip()]
        arms[f"overlap {float(o):g}, axes {axes or '-'}"] = dict(overlap=float(o), mirror=bool(axes),
                                                                 mirror_axes=axes or None)
    predictors = {k: Predictor(args.model, **v) for k, v in arms.items()}
    names = {int(v): k for k, v in ds["labels"].items() if int(v) > 0}
    classes = sorted(names)
    rows = {k: {"seconds": [], "cpu_seconds": [], "dice": [], "axes": p.mirror_axes, "runtime": p.runtime,
                "flips": [list(f) for f in p.flips], "overlap": p.overlap, "passes": []}
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
            shape = preprocess_image(image, p.plan, p.cfg).image.shape
            rows[k]["passes"].append(case_windows(shape, p.cfg.patch_size, p.overlap, p.cfg.spatial_dims)
                                     * len(p.flips))
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
    no_tta = next(k for k in rows if k.startswith("no TTA"))
    full = next(k for k in rows if k.startswith("full"))
    cpu0, wall0 = float(np.mean(rows[no_tta]["cpu_seconds"])), float(np.mean(rows[no_tta]["seconds"]))
    lines = ["## predict", "", machine_line() + f" torch threads: {args.threads}. Load average (1 min) "
             f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (`uptime`: '{up0}' / '{up1}'): the 2-core machine was "
             "shared with parallel work, so absolute seconds are inflated; the arms ran interleaved case by case in "
             "one process, so their ratios are comparable (CPU seconds: `time.process_time` of that process).",
             f"Command: `python benchmarks/bench_predict.py --model {args.model} --data {args.data} "
             + (f"--ids {args.ids}" if args.ids else f"--cases {args.cases}{' --exclude-study' * args.exclude_study}"
                f"{' --split test' * (args.split == 'test')}")
             + f" --threads {args.threads}`", "",
             f"n = {len(ids)} cases ({', '.join(ids)}; unit: case); Dice = hard Dice per foreground class, mean over "
             "cases where the class is present in the reference or the prediction; network passes = windows x "
             "flips per case, counted from the plan-grid shape (mean).", "",
             "| arm | overlap | flips | network passes | s per case, wall | CPU s per case | CPU vs no TTA | "
             "wall vs no TTA | " + " | ".join(f"Dice {names[c]}" for c in classes) + " | Dice vs full (per class) |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(classes) + "---|"]
    dice_of = {k: [np.nanmean([d[c] for d in r["dice"]]) for c in classes] for k, r in rows.items()}
    for k, r in rows.items():
        cpu, wall = float(np.mean(r["cpu_seconds"])), float(np.mean(r["seconds"]))
        diff = " / ".join(f"{a - b:+.4f}" for a, b in zip(dice_of[k], dice_of[full]))
        lines.append(f"| {k} | {r['overlap']:g} | {flips_text(r['flips'])} | {np.mean(r['passes']):.0f} | {wall:.2f} | "
                     f"{cpu:.2f} | {cpu / cpu0:.2f}x | {wall / wall0:.2f}x | "
                     + " | ".join(f"{v:.4f}" for v in dice_of[k]) + f" | {diff} |")
    default = next(k for k in rows if "default" in k)
    per_case = [a / b for a, b in zip(rows[default]["cpu_seconds"], rows[no_tta]["cpu_seconds"])]
    lines += ["", f"Default / no TTA CPU per case: {min(per_case):.2f}-{max(per_case):.2f}x."]
    choice = json.loads((args.model / "inference.json").read_text()) if (args.model / "inference.json").is_file() \
        else None
    if choice and "candidates" in choice:
        ref = choice["reference"]
        lines += ["", f"Package choice (inference.json): overlap {choice['overlap']:g}, flips "
                  f"{flips_text(row_flips(choice))}; reference (overlap 0.5, axes {ref['mirror_axes']}) "
                  f"Dice {ref['dice']:.4f}; tolerance {choice['tolerance']}; n = {choice['n_cases']} "
                  f"{choice['unit']}(s); cost unit: {choice['cost_unit']}.", "",
                  "| overlap | flips | cost | mean Dice (foreground classes) | vs reference | Dice per class "
                  f"({', '.join(names[c] for c in classes)}) | per class vs reference |",
                  "|---|---|---|---|---|---|---|"]
        for c in sorted(choice["candidates"], key=lambda c: (c["cost"], -c["dice"])):
            mark = "**" if (c["overlap"], row_flips(c)) == (choice["overlap"], row_flips(choice)) else ""
            lines.append(f"| {mark}{c['overlap']:g}{mark} | {mark}{flips_text(row_flips(c))}{mark} | "
                         f"{c['cost']:.3f} | {c['dice']:.4f} | {c['dice_vs_reference']:+.4f} | "
                         + " / ".join(f"{d:.4f}" for d in c.get("dice_by_class", [])) + " | "
                         + " / ".join(f"{d - r:+.4f}" for d, r in zip(c.get("dice_by_class", []),
                                                                      ref.get("dice_by_class", []))) + " |")
    elif choice:
        lines += ["", f"Package choice (inference.json, before the overlap study): axes {choice['mirror_axes']}."]
    md = "\n".join(lines)
    print(md)
    if args.json:
        args.json.write_text(json.dumps({"ids": ids, "load": [load0, load1], "uptime": [up0, up1],
                                         "rows": rows, "markdown": md}, indent=1, default=str))
    if not args.no_record:
        record_section("predict", md)


if __name__ == "__main__":
    main()
