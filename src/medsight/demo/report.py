"""Demo stage: the validation report (HTML + JSON) for the demo models, from what earlier stages wrote.

Segmentation numbers come from the segmentation stage's per-case table; a classifier section is added when the
classification stage left per-case predictions (``ctx.paths["cls_predictions"]``: case_id,y_true,prob,...), at the
unit those rows count, with the operating point the model folder stores; when the safety stage ran, its own table
(``ctx.paths["safety_scan_predictions"]``: the scans calibrated and thresholded as scans) and its calibrated copy of
the classifier package (``ctx.paths["safety_classifier"]``) are used instead. Each model gets a generated card
(``model_card_<task>.md`` beside the report, shown in it; the model packages are only read), and the per-case
tables behind every headline number are
copied beside report.json so that anyone can recompute them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from medsight.report.run_model import TEST_SET

UNSEEN = ("site_C",)
INTERNAL = TEST_SET  # the segmentation stage's held-out cohort (demo/segmentation.py), named as validate does
SEG_TABLE, CLS_TABLE = "segmentation_per_case.csv", "classification_per_scan.csv"
CARD_TEXT = {
    "intended_use": "Demonstration of medsight's pipeline on synthetic brain MRI (simulated anatomy and lesions); "
                    "for software testing and teaching only.",
    "out_of_scope_use": "Any clinical use; any real patient image; any decision about a person. The data are "
                        "synthetic, and the numbers say nothing about real scans.",
}


def run(ctx) -> dict[str, Any]:  # noqa: ANN001 - DemoContext
    from medsight.report.assemble import (classification_results, model_provenance, operating_point,
                                          segmentation_results)
    from medsight.report.cards import card_for
    from medsight.report.html import write_report

    out = Path(ctx.out_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    n_boot = 200 if ctx.fast else 1000
    min_cases = 5 if ctx.fast else 10
    seg_table, data = ctx.paths.get("seg_metrics"), ctx.paths.get("seg_data")
    if seg_table is None or data is None:
        return {"skipped": "no segmentation results in this run"}
    data = Path(data).resolve()
    labels = {int(v): k for k, v in json.loads((data / "dataset.json").read_text())["labels"].items() if int(v) > 0}
    model_dir = Path(ctx.paths["seg_model"]).resolve()
    pred_dir = ctx.paths.get("seg_predictions")
    res = segmentation_results(pd.read_csv(seg_table, dtype={"case_id": str}), data, labels,
                               model_provenance(model_dir, "demo segmentation (DynUNet)", "segmentation"), UNSEEN,
                               min_cases=min_cases, n_boot=n_boot, seed=ctx.seed,
                               pred_dir=Path(pred_dir).resolve() if pred_dir else None,
                               title="medsight demo: validation report", internal=INTERNAL)
    res.model["seed"] = ctx.seed
    from medsight.report.checklist import merge_partitioning
    from medsight.report.run_model import fold_partitioning

    parts = [fold_partitioning(model_dir, data)]
    shutil.copyfile(seg_table, out / SEG_TABLE)
    res.data["per_case_tables"] = {"segmentation": SEG_TABLE}
    doc = res.to_dict()
    cards = [card_for(doc, "segmentation", model_dir, "demo segmentation (DynUNet)", data, CARD_TEXT,
                      res.worst_cases, res.model["hashes"], card_path=out / "model_card_segmentation.md")]
    # the safety stage's scan-level table and calibrated package when it ran, else the classification stage's own
    cls_pred = ctx.paths.get("safety_scan_predictions") or ctx.paths.get("cls_predictions")
    if cls_pred and Path(cls_pred).is_file():
        cls_pred = Path(cls_pred).resolve()
        cls_model = Path(ctx.paths.get("safety_classifier") or ctx.paths.get("cls_model", cls_pred.parent)).resolve()
        cls_data = Path(ctx.paths.get("cls_volumes", data)).resolve()
        table = pd.read_csv(cls_pred, dtype={"case_id": str})
        unit = "scan" if "split" in table.columns else "case"
        cres = classification_results(table, cls_data, model_provenance(cls_model, "demo classifier", "classification"),
                                      UNSEEN, min_cases=min_cases, n_boot=n_boot, seed=ctx.seed,
                                      classifier_dir=cls_model, base=cls_pred.parent, unit=unit,
                                      op=operating_point(cls_model, unit, "lesion"))
        res.classification = cres.classification
        res.worst_cases += cres.worst_cases
        cls_hashes = {f"classifier/{k}": v for k, v in cres.model["hashes"].items()}
        res.model = {**res.model, "classifier": cres.model["dir"], "hashes": {**res.model["hashes"], **cls_hashes}}
        table.to_csv(out / CLS_TABLE, index=False)
        from medsight.report.assemble import prediction_partitioning

        parts.append(prediction_partitioning(table))
        res.data["per_case_tables"]["classification"] = CLS_TABLE
        cards.append(card_for(res.to_dict(), "classification", cls_model, "demo classifier (lesion on slices)",
                              cls_data, CARD_TEXT, cres.worst_cases, cres.model["hashes"],
                              card_path=out / "model_card_classification.md"))
    else:
        res.notes.append("no per-case classifier predictions in this run: the classification section (ROC, "
                         "reliability, decision curves) appears when the classification stage writes them")
    res.data["partitioning"] = merge_partitioning(*parts)
    res.model_cards = cards
    res.model_card = cards[0]
    html, js = write_report(res, out / "report.html")
    ctx.paths["report"] = html
    ctx.paths["report_json"] = js
    seg = res.segmentation or {}
    return {"report": str(html), "cohorts": [c["name"] for c in seg.get("cohorts", [])],
            "too_few_subgroups": sum(r["too_few"] for r in seg.get("subgroups", [])),
            "worst_cases": len(res.worst_cases), "model_cards": [c["file"] for c in cards]}
