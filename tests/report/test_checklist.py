"""Checklist rows follow the sections present in the results document."""

from __future__ import annotations

from medsight.report.checklist import ITEMS, checklist_for


def test_sections_present_only(results) -> None:
    full = checklist_for(results.to_dict())
    assert {r["section"] for r in full} == set(ITEMS)  # the fixture has every section
    seg_only = results.to_dict() | {"classification": None, "worst_cases": [], "model_card": None,
                                    "federated": None}
    got = {r["section"] for r in checklist_for(seg_only)}
    assert got == {"provenance", "cohorts", "segmentation", "subgroups"}
    assert all(r["claim"] and r["tripod_ai"] for r in full)
    assert any("CLAIM 32" in c for r in full for c in r["claim"])  # external validation is mapped
