"""Run the inference study (window overlap x set of flips) for a segmentation package, into a NEW package.

The demo trains with ``study_mirroring=False`` (it predicts without mirroring), so its package has no
``inference.json`` and ``predict``'s default there is "no mirroring"; packages trained before the overlap study
record mirror axes only. To benchmark the default that a ``medsight
train`` package gets (docs/benchmarks.md "predict"), this runs exactly what training runs after a fold
(``segmentation.train.fold_mirror_study``: every flip combination at every overlap of
``tta_study.OVERLAPS`` on the sorted first ``STUDY_CASES`` validation cases of the fold) on a copy
of the training folder and packages the copy with ``package_segmentation`` (which writes ``inference.json``). The
source folder is not touched. Run with MEDSIGHT_HOME pointing at a scratch folder (packaging registers the copy).

Run: python benchmarks/study_package_mirroring.py --train-dir OUT/segmentation/model.training --data OUT/data \
         --dest /tmp/studied
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from medsight.data.dataset import load_dataset
from medsight.files import atomic_write_text
from medsight.segmentation.ensemble import load_models
from medsight.segmentation.package import package_segmentation
from medsight.segmentation.train import fold_mirror_study
from medsight.segmentation.tta_study import choose

KEEP = ("plan.json", "dataset.json", "splits.json")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--dest", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse-study", action="store_true", help="a fold whose summary already holds the overlap "
                    "study's table is not re-run, only re-chosen (after a change of the chooser)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = args.dest / "train"
    train.mkdir(parents=True, exist_ok=True)
    for f in KEEP:
        shutil.copy2(args.train_dir / f, train / f)
    splits = json.loads((args.train_dir / "splits.json").read_text())
    for fold_dir in sorted(args.train_dir.glob("fold_*")):
        if not (fold_dir / "model_final.pt").is_file():
            continue
        out = train / fold_dir.name
        out.mkdir(exist_ok=True)
        for f in ("model_final.pt", "summary.json"):
            shutil.copy2(fold_dir / f, out / f)
        summary = json.loads((out / "summary.json").read_text())
        plan, cfg, models = load_models(train, [fold_dir.name.split("_", 1)[1]])
        val = splits[int(summary["fold"])]["val"]
        old = summary.get("mirror_study") or {}
        if args.reuse_study and "table" in old:
            chosen = choose(old)
            summary["mirror_study"] = {**old, "chosen": {k: chosen[k] for k in ("overlap", "mirror_axes", "flips")}}
        else:
            summary["mirror_study"] = fold_mirror_study(models[0], load_dataset(args.data), plan, cfg, val)
        print(fold_dir.name, json.dumps(summary["mirror_study"]))
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    pkg = package_segmentation(train, args.dest / "model", name="studied-" + args.train_dir.parent.name)
    print("package:", pkg.path, (pkg.path / "inference.json").read_text())


if __name__ == "__main__":
    main()
