"""Demo stage: the validation report (HTML + JSON) for the demo models, from what earlier stages wrote.

Segmentation numbers come from the segmentation stage's per-case table; a classifier section is added when the
classification stage left per-case predictions (``ctx.paths["cls_predictions"]``: case_id,y_true,prob,...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

UNSEEN = ("site_C",)


def run(ctx) -> dict[str, Any]:  # noqa: ANN001 - DemoContext
    from medsight.report.assemble import (classification_results, model_card_of, model_provenance,
                                          segmentation_results)
    from medsight.report.html import write_report

    out = Path(ctx.out_dir) / "report"
    n_boot = 200 if ctx.fast else 1000
    min_cases = 5 if ctx.fast else 10
    seg_table, data = ctx.paths.get("seg_metrics"), ctx.paths.get("seg_data")
    if seg_table is None or data is None:
        return {"skipped": "no segmentation results in this run"}
    data = Path(data)
    labels = {int(v): k for k, v in json.loads((data / "dataset.json").read_text())["labels"].items() if int(v) > 0}
    model_dir = Path(ctx.paths["seg_model"])
    res = segmentation_results(pd.read_csv(seg_table, dtype={"case_id": str}), data, labels,
                               model_provenance(model_dir, "demo segmentation (DynUNet)", "segmentation"), UNSEEN,
                               min_cases=min_cases, n_boot=n_boot, seed=ctx.seed,
                               pred_dir=ctx.paths.get("seg_predictions"), title="medsight demo: validation report",
                               model_card=model_card_of(model_dir))
    res.model["seed"] = ctx.seed
    cls_pred = ctx.paths.get("cls_predictions")
    if cls_pred and Path(cls_pred).is_file():
        cls_model = Path(ctx.paths.get("cls_model", Path(cls_pred).parent))
        cls_data = Path(ctx.paths.get("cls_volumes", data))
        cres = classification_results(pd.read_csv(cls_pred, dtype={"case_id": str}), cls_data,
                                      model_provenance(cls_model, "demo classifier", "classification"), UNSEEN,
                                      min_cases=min_cases, n_boot=n_boot, seed=ctx.seed, classifier_dir=cls_model,
                                      base=Path(cls_pred).parent)
        res.classification = cres.classification
        res.worst_cases += cres.worst_cases
        cls_hashes = {f"classifier/{k}": v for k, v in cres.model["hashes"].items()}
        res.model = {**res.model, "classifier": cres.model["dir"], "hashes": {**res.model["hashes"], **cls_hashes}}
    else:
        res.notes.append("no per-case classifier predictions in this run: the classification section (ROC, "
                         "reliability, decision curves) appears when the classification stage writes them")
    html, js = write_report(res, out / "report.html")
    ctx.paths["report"] = html
    ctx.paths["report_json"] = js
    seg = res.segmentation or {}
    return {"report": str(html), "cohorts": [c["name"] for c in seg.get("cohorts", [])],
            "too_few_subgroups": sum(r["too_few"] for r in seg.get("subgroups", [])),
            "worst_cases": len(res.worst_cases)}
