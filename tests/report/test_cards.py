"""A generated model card takes the written facts from model_card.json, the package id and version from the
package manifest, energy from energy.json, and every measured number from the results document."""

from __future__ import annotations

import json
from pathlib import Path

from medsight.package.package import load_package, save_package
from medsight.report.cards import card_for, package_info, write_card_version
from medsight.report.results import ValidationResults


def test_card_from_results_and_folder(results: ValidationResults, tmp_path: Path) -> None:
    (tmp_path / "model_card.json").write_text(json.dumps({"intended_use": "Triage of head CT in adults.",
                                                          "limitations": ["not for children"]}))
    energy = {"kwh": 0.012, "co2_kg": 0.004, "seconds": 61.0, "method": "RAPL", "measured": True}
    (tmp_path / "energy.json").write_text(json.dumps(energy))
    (tmp_path / "config.json").write_text("{}")
    pkg = save_package(tmp_path, tmp_path.parent / f"{tmp_path.name}_pkg", task="classification", name="toy")
    doc = results.to_dict()
    manifest_before = (pkg.path / "manifest.json").read_bytes()
    card = card_for(doc, "classification", pkg.path, "toy", worst_cases=doc["worst_cases"],
                    card_path=tmp_path.parent / "report" / "model_card.md")
    assert card["intended_use"] == "Triage of head CT in adults." and card["out_of_scope_use"]
    assert card["extra"]["package_id"] == pkg.id and card["extra"]["energy"] == energy
    assert card["version"] == (str(pkg.version) if pkg.version is not None else "unregistered")
    c0 = doc["classification"]["cohorts"][0]
    auc = c0["auc"]
    assert card["performance"]["by_cohort"][c0["name"]]["AUC (95% CI)"] == (
        f"{auc['value']:.3f} ({auc['lo']:.3f}-{auc['hi']:.3f})")
    assert card["limitations"][0] == "not for children" and "worst case c001" in card["limitations"][1]
    few = [r for r in doc["classification"]["subgroups"] if r["too_few"]]
    assert few and f"{few[0]['attribute']}={few[0]['group']}" in card["limitations"][-1]
    # the card goes beside the report: the evaluated package is not touched and still verifies as the same id
    assert Path(card["file"]) == (tmp_path.parent / "report" / "model_card.md").resolve()
    md = Path(card["file"]).read_text()
    assert md.startswith("# Model card: toy") and pkg.id in md and "RAPL" in md and "Triage" in md
    assert load_package(pkg.path).id == pkg.id and (pkg.path / "manifest.json").read_bytes() == manifest_before
    assert not (pkg.path / "model_card.md").exists()
    # on request (validate --write-card) it becomes a NEW version in its own folder, parent recorded
    new = write_card_version(pkg.path, Path(card["file"]))
    assert new.parent_id == pkg.id and new.path != pkg.path and new.file("model_card.md").read_text() == md
    assert load_package(pkg.path).id == pkg.id


def test_unregistered_folder_gets_an_id_from_its_hashes(tmp_path: Path) -> None:
    a = package_info(tmp_path, {"model.pt": "aa"})
    assert a["version"] == "unregistered" and a["id"] != package_info(tmp_path, {"model.pt": "ab"})["id"]
    assert a == package_info(tmp_path, {"model.pt": "aa"})
