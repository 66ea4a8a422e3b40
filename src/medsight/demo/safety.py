"""Demo stage "safety": calibrate the classifier, fit the OOD detectors and the referral rule, and report
ECE before/after, OOD AUROC per detector and set, referral keep rates and risk-coverage of the unseen site.

Uses the project classifier (``ctx.paths["cls_model"]``) when the classification stage produced one and its
data can be rebuilt; otherwise the safety layer's small reference task (real MNI anatomy, simulated lesions,
three sites) so that the stage always runs. Budget: well under a minute.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medsight.files import atomic_write_text

log = logging.getLogger(__name__)


def run(ctx) -> dict[str, Any]:  # noqa: ANN001 - DemoContext, imported lazily by the runner
    from medsight.safety.plots import reliability_diagram
    from medsight.safety.temperature import save_calibration
    from medsight.safety.tasks import build_safety_task

    out = Path(ctx.out_dir) / "safety"
    task = build_safety_task(ctx.paths.get("cls_model"), seed=ctx.seed, fast=ctx.fast, quiet=ctx.quiet,
                             work_dir=out)
    res = task.evaluate(quiet=ctx.quiet)
    arts = res.pop("artifacts")
    save_calibration(task.model_dir, arts["calibration"])
    arts["mahalanobis"].save(task.model_dir / "ood_mahalanobis.json")
    arts["policy"].save(task.model_dir / "referral.json")
    ctx.paths["safety_calibration"] = task.model_dir / "calibration.json"
    ctx.paths["safety_referral"] = task.model_dir / "referral.json"

    cal = res["calibration"]
    ctx.paths["safety_reliability"] = reliability_diagram(
        out / "reliability.png",
        {f"{name} before (ECE {c['ece_before']:.3f})": c["reliability_before"] for name, c in cal.items()}
        | {f"{name} after (ECE {c['ece_after']:.3f})": c["reliability_after"] for name, c in cal.items()},
        title="Reliability before / after temperature scaling")
    summary = out / "safety_summary.json"
    atomic_write_text(summary, json.dumps(res, indent=2, default=float))
    ctx.paths["safety_summary"] = summary

    rc = res["risk_coverage"][task.unseen]
    return {
        "classifier": task.source,
        "temperature": res["temperature"],
        "ece": {name: {"before": round(c["ece_before"], 4), "after": round(c["ece_after"], 4)} for name, c in cal.items()},
        "ood_auroc": {s: {d: round(m["auroc"], 3) for d, m in dets.items()} for s, dets in res["ood"].items()},
        "referral_kept": {s: round(v["kept"], 3) for s, v in res["referral"].items() if s != "thresholds"},
        f"{task.unseen}_error_at_100pct_coverage": round(rc["error_at_100"], 4),
        f"{task.unseen}_error_at_80pct_coverage": round(rc["error_at_80"], 4),
    }
