"""Which report section answers which reporting-guideline item (CLAIM 2020, TRIPOD+AI 2024).

Item numbers follow the published checklists (Mongan et al., Radiology: AI 2020; Collins et al., BMJ 2024); the
topic text is ours, short, so a reader can check the mapping without the paper open. Sections absent from a
given report (e.g. decision curves for a segmentation model) are dropped by ``checklist_for``.
"""

from __future__ import annotations

from typing import Any

# section id -> (what it shows, CLAIM items, TRIPOD+AI items)
ITEMS: dict[str, tuple[str, list[str], list[str]]] = {
    "provenance": ("Model and data provenance: file hashes, library versions, seed",
                   ["CLAIM 7 data sources", "CLAIM 23 model description", "CLAIM 41 code/model availability"],
                   ["TRIPOD+AI 8 data sources", "TRIPOD+AI 18 open science (code, model)"]),
    "cohorts": ("Internal test folds and external sites, case counts",
                ["CLAIM 21 data partitions", "CLAIM 22 level of partitioning",
                 "CLAIM 32 external validation", "CLAIM 33 flow of cases"],
                ["TRIPOD+AI 8 data sources", "TRIPOD+AI 20 participants / flow",
                 "TRIPOD+AI 12 data splitting and external evaluation"]),
    "classification": ("AUC, PR-AUC, sensitivity, specificity with 95% CIs; ROC and PR curves",
                       ["CLAIM 28 performance metrics", "CLAIM 29 statistical measures (CIs)",
                        "CLAIM 35 estimates of performance and their precision"],
                       ["TRIPOD+AI 12g performance measures", "TRIPOD+AI 23a performance with CIs"]),
    "calibration": ("Reliability diagrams, ECE and Brier score before/after calibration",
                    ["CLAIM 28 performance metrics", "CLAIM 35 estimates of performance"],
                    ["TRIPOD+AI 12g calibration", "TRIPOD+AI 23a calibration with CIs"]),
    "decision": ("Decision curves (net benefit) and referral rate",
                 ["CLAIM 38 implications for practice"],
                 ["TRIPOD+AI 12g clinical utility", "TRIPOD+AI 23a net benefit"]),
    "segmentation": ("Dice per label and cohort with 95% CIs, Dice distributions",
                     ["CLAIM 28 performance metrics", "CLAIM 29 statistical measures (CIs)",
                      "CLAIM 35 estimates of performance and their precision"],
                     ["TRIPOD+AI 23a performance with CIs"]),
    "federated": ("Federated training: each site's held-out AUC and ECE per round, contributors, aggregate hashes",
                  ["CLAIM 7 data sources", "CLAIM 30 robustness analysis"],
                  ["TRIPOD+AI 8 data sources", "TRIPOD+AI 23b heterogeneity across sites"]),
    "subgroups": ("Forest plots by site, scanner, sex and age band; groups under the minimum flagged",
                  ["CLAIM 30 robustness analysis", "CLAIM 34 demographic and clinical characteristics"],
                  ["TRIPOD+AI 14 fairness (subgroups)", "TRIPOD+AI 23a performance in key subgroups",
                   "TRIPOD+AI 23b heterogeneity across sites"]),
    "failures": ("Worst cases with image, reference, prediction and heat map / uncertainty",
                 ["CLAIM 36 failure analysis", "CLAIM 31 explainability methods"],
                 ["TRIPOD+AI 26 interpretation (limitations)"]),
    "model_card": ("Model card: intended use, limitations",
                   ["CLAIM 37 limitations", "CLAIM 38 implications"],
                   ["TRIPOD+AI 3 intended use", "TRIPOD+AI 26 limitations"]),
}


def partitioning(pairs: dict[str, tuple[set[str], set[str]]], how: str) -> dict[str, Any]:
    """Whether every (fitted-on, tested-on) pair of patient sets is disjoint: the patient-level partitioning the
    checklist reports, computed from the data instead of asserted. ``pairs`` maps a name to the two sets."""
    if not pairs or not any(a and b for a, b in pairs.values()):
        return {"checked": False, "patient_level": None, "how": how}
    bad = {name: sorted(a & b)[:3] for name, (a, b) in pairs.items() if a & b}
    return {"checked": True, "patient_level": not bad, "how": how, "overlaps": bad}


def merge_partitioning(*parts: dict[str, Any]) -> dict[str, Any]:
    """One verdict for a report with several models: violated if any is, checked if any was."""
    checked = [p for p in parts if p.get("checked")]
    if not checked:
        return {"checked": False, "patient_level": None, "how": "; ".join(p["how"] for p in parts)}
    return {"checked": True, "patient_level": all(p["patient_level"] for p in checked),
            "how": "; ".join(p["how"] for p in checked),
            "overlaps": {k: v for p in checked for k, v in (p.get("overlaps") or {}).items()}}


def _claim22(doc: dict[str, Any]) -> str:
    part = (doc.get("data") or {}).get("partitioning") or {}
    if not part.get("checked"):
        return "CLAIM 22 level of partitioning (NOT checked: no patient ids / splits to compare)"
    if part.get("patient_level"):
        return f"CLAIM 22 level of partitioning (patient: checked, {part.get('how')})"
    first = next(iter(part.get("overlaps", {}).items()), ("?", []))
    return f"CLAIM 22 level of partitioning (VIOLATED: {first[0]} shares patients {', '.join(first[1])})"


def checklist_for(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The checklist rows for the sections this results document actually contains; the partitioning item says
    what ``data.partitioning`` found (checked, violated or not checked), never a bare claim."""
    present = {"provenance", "cohorts"}
    if doc.get("classification"):
        present |= {"classification", "calibration", "decision"}
    if doc.get("segmentation"):
        present.add("segmentation")
    if any((doc.get(s) or {}).get("subgroups") for s in ("classification", "segmentation")):
        present.add("subgroups")
    if doc.get("federated"):
        present.add("federated")
    if doc.get("worst_cases"):
        present.add("failures")
    if doc.get("model_card") or doc.get("model_cards"):
        present.add("model_card")
    return [{"section": s, "shows": d, "tripod_ai": t,
             "claim": [_claim22(doc) if item.startswith("CLAIM 22") else item for item in c]}
            for s, (d, c, t) in ITEMS.items() if s in present]
