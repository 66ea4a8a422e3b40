"""Claim under test: the segmentation demo's old held-out cohort (fold 0's validation cases, which chose the
checkpoint and fitted the lesion rules) gives optimistic lesion figures next to the test set in no fold.

Scores one finished demo segmentation run's package (``OUT/segmentation/model``) on fold 0's validation cases
(``val``) or on the dataset's ``split = test`` cases (``test``), as the stage scores its cohorts (overlap 0.25, no
mirroring, the stage's metric functions), and prints JSON. DATA defaults to ``OUT/data``; pass the branch's data
folder to score an old run's model on the test set. Results: docs/benchmarks.md, "The demo's held-out cohort".

    PYTHONPATH=src .venv/bin/python -m medsight.cli.main demo --stage segmentation --fresh --out /tmp/run
    PYTHONPATH=src .venv/bin/python benchmarks/bench_seg_cohorts.py /tmp/run val
    PYTHONPATH=src .venv/bin/python benchmarks/bench_seg_cohorts.py /tmp/run test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from medsight.data.dataset import load_dataset
from medsight.data.splits import is_test_case, load_folds
from medsight.demo import segmentation as stage
from medsight.io.nifti import read_nifti
from medsight.metrics.lesions import summarise_lesions
from medsight.segmentation.predict import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the demo's --out folder of a finished segmentation stage")
    ap.add_argument("cohort", choices=("val", "test"))
    ap.add_argument("data", type=Path, nargs="?", help="dataset folder (default OUT/data)")
    a = ap.parse_args()
    ds = load_dataset(a.data or a.out / "data")
    pkg = a.out / "segmentation" / "model"
    ids = (load_folds(pkg / "splits.json")[0]["val"] if a.cohort == "val"
           else [c.case_id for c in ds.cases if is_test_case(c.attrs)])
    predictor = Predictor(pkg, overlap=stage.OVERLAP, mirror=False)
    rows, cases, secs = [], [], []
    for cid in ids:
        case = ds.case(cid)
        image = read_nifti(case.images[0])
        t = time.perf_counter()
        pred = predictor.predict(image)
        secs.append(time.perf_counter() - t)
        ref = read_nifti(case.label).array.astype(np.int16)
        rows += [{"case_id": cid, **m} for m in stage._metrics(pred.labels.array, ref, image.spacing, ds.foreground)]
        cases += stage._lesion_cases(pred, ref, image.spacing, ds.foreground, cid, case.patient_id)
    res: dict[str, object] = {"cohort": a.cohort, "n_cases": len(ids),
                              "predict_s_per_case": round(float(np.mean(secs)), 2)}
    for name in ds.foreground.values():  # the stage's rule: lesion Dice over the cases with a lesion only
        vals = [r["dice"] for r in rows if r["name"] == name
                and (r["volume_ref_ml"] > 0 if name == "lesion" else not np.isnan(r["dice"]))]
        res[f"dice_{name}"] = round(float(np.mean(vals)), 4) if vals else None
    s = summarise_lesions(cases, n_boot=200, seed=0)
    m = s["metrics"]
    res.update(lesion_sensitivity=round(m["sensitivity"]["value"], 4),
               lesion_fp_per_case=round(m["fp_per_case"]["value"], 4),
               lesion_cases=sum(1 for c in cases if c.ref), n_ref_lesions=sum(len(c.ref) for c in cases))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
