"""The report's per-site, per-round view of a federated package: a hand-made run record with known figures is
packaged the way ``medsight federated run --package`` packages one, validated from the CLI, and every figure is
found in report.json and, tagged with its JSON path, in report.html."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from medsight.cli.validate import validate
from medsight.errors import ConfigError
from medsight.federated.package import package_federation
from medsight.federated.site import small_classifier
from medsight.report.federated import federated_view
from medsight.report.results import resolve
from tests.report.test_cli import _dataset

# round -> site -> (auc, ece, accuracy, log_loss, n); site C stops answering after round 1 (killed)
EVAL = {1: {"A": (0.611, 0.212, 0.55, 0.690, 12), "B": (0.702, 0.187, 0.60, 0.671, 10),
            "C": (0.555, 0.301, 0.50, 0.702, 8)},
        2: {"A": (0.844, 0.093, 0.75, 0.512, 12), "B": (0.877, 0.071, 0.80, 0.488, 10)}}
EPS = {1: 5.2985, 2: 7.7862}
KEYS = ("auc", "ece", "accuracy", "log_loss", "n")


def _run_record(out) -> dict:
    """A federation.json as the ServerApp writes it (only the fields the package and the report read)."""
    rounds = []
    for rnd, per in EVAL.items():
        ev = {s: dict(zip(KEYS, v)) for s, v in per.items()}
        n = sum(m["n"] for m in ev.values())
        glob = {k: sum(m[k] * m["n"] for m in ev.values()) / n for k in KEYS if k != "n"} | {"n": float(n)}
        rounds.append({"round": rnd, "sites_asked": len(per), "contributors": ["A", "B"], "no_reply": [],
                       "train": {s: {"num-examples": 28.0, "loss": 0.6, "epsilon": EPS[rnd]} for s in ("A", "B")},
                       "aggregated": True, "aggregate_sha256": f"{rnd:02d}" * 32, "evaluate": ev, "global": glob})
    rec = {"strategy": "fedavg", "rounds": rounds,
           "config": {"dp-noise": 1.0, "dp-clip": 1.0, "dp-delta": 1e-5, "dp-epsilon": 8.0}}
    out.mkdir()
    (out / "federation.json").write_text(json.dumps(rec))
    torch.save(small_classifier().state_dict(), out / "model.pt")
    return rec


def test_report_shows_each_site_each_round(tmp_path) -> None:
    rec = _run_record(tmp_path / "fed-out")
    pkg = package_federation(tmp_path / "fed-out", tmp_path / "pkg", "fed-toy")
    ds, _, _ = _dataset(tmp_path)
    r = CliRunner().invoke(validate, [str(pkg.path), str(ds), "--predictions", str(tmp_path / "pred.csv"),
                                      "--report", str(tmp_path / "r.html"), "--n-boot", "50", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    fed = doc["federated"]
    assert fed["sites"] == ["A", "B", "C"] and fed["rounds"] == 2 and fed["strategy"] == "fedavg"
    rows = {(x["round"], x["site"]): x for x in fed["rows"]}
    assert len(rows) == 6
    for rnd, per in EVAL.items():
        for site, vals in per.items():
            row = rows[(rnd, site)]
            assert row["evaluated"] and [row[k] for k in KEYS] == list(vals)
            assert row["contributed"] == (site != "C")
        assert fed["global"][rnd - 1]["auc"] == pytest.approx(rec["rounds"][rnd - 1]["global"]["auc"])
        assert fed["global"][rnd - 1]["aggregate_sha256"] == f"{rnd:02d}" * 32
    assert rows[(2, "C")]["evaluated"] is False and rows[(2, "C")]["auc"] is None
    assert rows[(2, "A")]["epsilon"] == EPS[2] and rows[(1, "C")]["epsilon"] is None
    # hand-checked: round 2's case-weighted ECE over A (12 cases) and B (10) = (0.093*12 + 0.071*10) / 22
    assert fed["global"][1]["ece"] == pytest.approx(0.083, abs=1e-12)

    page = (tmp_path / "r.html").read_text()
    assert 'id="federated"' in page and "AUC and ECE per site and round" in page
    tagged = dict(re.findall(r'data-json="(federated\.[^"]+)">([^<]*)<', page))
    for i, row in enumerate(fed["rows"]):
        for k in KEYS if row["evaluated"] else ():
            shown = tagged[f"federated.rows.{i}.{k}"]
            assert shown == (str(row[k]) if k == "n" else f"{row[k]:.3f}"), (i, k)
    assert tagged["federated.global.1.ece"] == "0.083" and tagged["federated.rows.3.epsilon"] == "7.786"
    assert page.count("no evaluation reply this round") == 1
    assert resolve(doc, "federated.rows.0.auc") == 0.611
    assert any(row["section"] == "federated" for row in _checklist(doc))


def _checklist(doc: dict) -> list[dict]:
    from medsight.report.checklist import checklist_for

    return checklist_for(doc)


def test_plain_model_has_no_federated_section_and_bad_record_is_a_config_error(tmp_path) -> None:
    from medsight.package.package import Package
    from medsight.report.federated import federated_view_of

    assert federated_view_of(Package(tmp_path / "m", {"extra": {"metrics": {}}, "files": {}})) is None
    with pytest.raises(ConfigError, match="per_round"):
        federated_view({"sites": ["A"]})
