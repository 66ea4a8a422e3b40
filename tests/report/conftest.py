"""A small results document built from synthetic predictions (no model training needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medsight.report.federated import federated_view
from medsight.report.results import ValidationResults
from medsight.report.validate import classification_cohort, classification_section, segmentation_section

MIN_CASES = 10


def synthetic_results(seed: int = 0) -> ValidationResults:
    rng = np.random.default_rng(seed)
    rows = []
    for site, n, shift in (("site_A", 80, 1.6), ("site_B", 60, 1.4), ("site_C", 50, 0.9), ("site_D", 4, 1.0)):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        logit = shift * (2 * y - 1) + rng.normal(0, 1, n)
        for yi, li in zip(y, logit):
            rows.append({"site": site, "y_true": int(yi), "logit": float(li), "sex": rng.choice(["F", "M"]),
                         "age": float(rng.uniform(25, 85))})
    t = pd.DataFrame(rows)
    t["prob_before"] = 1 / (1 + np.exp(-2.5 * t["logit"]))  # over-confident
    t["prob"] = 1 / (1 + np.exp(-t["logit"]))
    internal = t[t.site.isin(["site_A", "site_B"])]
    cohorts = [classification_cohort("internal test folds", "internal", internal.y_true, internal.prob,
                                     internal.prob_before, referred=internal.prob.between(0.3, 0.7), n_boot=200)]
    for site in ("site_C", "site_D"):
        s = t[t.site == site]
        cohorts.append(classification_cohort(site, "external", s.y_true, s.prob, s.prob_before, n_boot=200))
    cls = classification_section(cohorts, t, MIN_CASES, n_boot=200)
    seg_rows = []
    for i in range(30):
        site = ["site_A", "site_B", "site_C"][i % 3] if i < 27 else "site_D"
        for lab in (1, 2):
            seg_rows.append({"case_id": f"c{i:03d}", "label": lab, "dice": float(rng.uniform(0.7, 0.95)),
                             "cohort": "external" if site in ("site_C", "site_D") else "internal",
                             "site": site, "sex": "F" if i % 2 else "M"})
    seg = segmentation_section(pd.DataFrame(seg_rows), {1: "grey_matter", 2: "white_matter"}, MIN_CASES, n_boot=200,
                               kinds={"external": "external"})
    return ValidationResults(title="Test validation report", created="2026-01-01T00:00:00Z", min_cases=MIN_CASES,
                             model={"name": "toy", "task": "classification", "hashes": {"model.pt": "ab" * 32},
                                    "versions": {"medsight": "0.1"}},
                             data={"dataset": "synthetic", "n_cases": len(t)}, classification=cls,
                             segmentation=seg,
                             worst_cases=[{"case_id": "c001", "cohort": "external", "metric": "dice",
                                           "value": 0.7012, "thumbnail": None, "note": "no image"}],
                             model_card={"name": "toy", "intended_use": "tests", "limitations": ["synthetic"]},
                             federated=federated_view(_federation()))


def _federation() -> dict:
    """A two-round, two-site federation summary as a federated package's manifest records it."""
    site = lambda auc, ece: {"auc": auc, "ece": ece, "accuracy": 0.6, "log_loss": 0.66, "n": 12.0}  # noqa: E731
    return {"strategy": "fedprox", "sites": ["site_A", "site_B"], "rounds": 2,
            "dp": {"dp-noise": 0.0, "dp-clip": 1.0, "dp-delta": 1e-5, "dp-epsilon": 10.0},
            "per_round": [{"round": r, "contributors": ["site_A", "site_B"], "aggregate_sha256": "cd" * 32,
                           "sites": {"site_A": site(0.6 + r / 10, 0.2 / r), "site_B": site(0.55 + r / 10, 0.25 / r)},
                           "global": {"auc": 0.6 + r / 10, "ece": 0.22 / r, "n": 24.0}} for r in (1, 2)]}


@pytest.fixture(scope="session")
def results() -> ValidationResults:
    return synthetic_results()
