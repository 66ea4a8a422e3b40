"""The package through the commands: train-cls registers it, predict-cls / models verify refuse a changed one,
the registry status gates use, and every clinical command leaves one audit event (or fails)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from .conftest import run_cli


def _images(manifest: Path, n: int) -> list[Path]:
    table = pd.read_csv(manifest)
    return [manifest.parent / p for p in table["image"].head(n)]


def _json_out(capsys: pytest.CaptureFixture, *args: str) -> object:
    capsys.readouterr()
    assert run_cli(*args) == 0
    return json.loads(capsys.readouterr().out)


def test_train_cls_writes_a_registered_package_with_energy(trained_cls, capsys) -> None:
    pkg_dir, home = trained_cls
    manifest = json.loads((pkg_dir / "manifest.json").read_text())
    assert {"model.pt", "config.json", "validation_predictions.json", "energy.json"} <= set(manifest["files"])
    assert manifest["task"] == "classification" and manifest["name"] == "squares"
    energy = json.loads((pkg_dir / "energy.json").read_text())
    assert energy["kwh"] > 0 and energy["method"].split(":")[0] in ("measured", "estimated")
    assert energy["measured"] == energy["method"].startswith("measured")
    rows = json.loads((pkg_dir / "config.json").read_text())["threshold_selection"]["square"]
    assert rows["target_sensitivity"] == 0.9 and rows["calibrated"] is False
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MEDSIGHT_HOME", str(home))
        listed = _json_out(capsys, "models", "list", "--json")
        assert [(r["ref"], r["status"], r["id"]) for r in listed] == [("squares@1", "candidate", manifest["id"])]
        events = [json.loads(line) for line in
                  (capsys.readouterr(), run_cli("audit", "list", "--json"), capsys.readouterr().out)[2].splitlines()]
    train = [e for e in events if e["event"] == "train-cls"]
    assert len(train) == 1 and train[0]["details"]["package_id"] == manifest["id"]
    assert train[0]["details"]["exit_status"] == 0 and train[0]["details"]["energy"]["kwh"] > 0


def test_predict_cls_by_name_is_audited_with_hashes(cls_package: Path, square_manifest: Path, tmp_path: Path,
                                                    capsys, medsight_home: Path) -> None:
    images = _images(square_manifest, 2)
    out = tmp_path / "pred.csv"
    assert run_cli("-q", "predict-cls", "--actor", "dr_who", "squares@1", *images, out, "--no-gradcam") == 0
    table = pd.read_csv(out)
    assert len(table) == 2 and set(table.columns) >= {"p_square", "decision_square"}
    events = [json.loads(line) for line in
              (capsys.readouterr(), run_cli("audit", "list", "--json"), capsys.readouterr().out)[2].splitlines()]
    assert [e["event"] for e in events] == ["predict-cls"]
    d = events[0]["details"]
    assert events[0]["actor"] == "dr_who" and d["exit_status"] == 0
    pkg_id = json.loads((cls_package / "manifest.json").read_text())["id"]
    assert d["package_id"] == pkg_id
    assert {i["path"]: i["sha256"] for i in d["inputs"]} == {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in images}
    assert d["outputs"] == [{"path": str(out), "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}]
    assert d["energy"]["method"].split(":")[0] in ("measured", "estimated")
    assert run_cli("audit", "verify") == 0
    db = medsight_home / "audit.db"
    with sqlite3.connect(db) as con:  # change one character of the stored record
        con.execute("UPDATE audit_events SET details = replace(details, 'dr_who', 'dr_wha')")
        con.execute("UPDATE audit_events SET actor = 'dr_wha'")
    assert run_cli("audit", "verify") == 2


@pytest.mark.parametrize("tamper, named", [
    (lambda p: (p / "model.pt").write_bytes((p / "model.pt").read_bytes()[:-1] + b"\x01"), "model.pt"),
    (lambda p: (p / "config.json").write_text((p / "config.json").read_text().replace('"threshold": 0.', '"threshold": 1.', 1)),
     "config.json"),
    (lambda p: (p / "calibration.json").write_text(json.dumps({"format": "medsight-calibration"})),
     "calibration.json"),
    (lambda p: (p / "referral.json").write_text("{}"), "referral.json"),
])
def test_changed_or_unlisted_file_stops_verify_and_predict(cls_package: Path, square_manifest: Path, tmp_path: Path,
                                                          capsys, tamper, named: str) -> None:
    assert run_cli("models", "verify", "squares") == 0
    tamper(cls_package)
    capsys.readouterr()
    assert run_cli("models", "verify", "squares") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err
    assert run_cli("-q", "predict-cls", cls_package, *_images(square_manifest, 1), tmp_path / "p.csv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and not (tmp_path / "p.csv").exists()


def test_status_moves_forward_and_retired_models_are_refused(cls_package: Path, square_manifest: Path,
                                                              tmp_path: Path, capsys) -> None:
    img = _images(square_manifest, 1)
    assert run_cli("models", "promote", "squares@1") == 0  # candidate -> approved
    assert run_cli("models", "promote", "squares@1", "--to", "retired") == 0
    assert run_cli("models", "promote", "squares@1") == 2  # retired is final
    capsys.readouterr()
    assert run_cli("-q", "predict-cls", "squares@1", *img, tmp_path / "a.csv", "--no-gradcam") == 2
    assert "retired" in capsys.readouterr().err
    assert run_cli("-q", "predict-cls", cls_package, *img, tmp_path / "a.csv", "--no-gradcam") == 2  # by folder too
    assert run_cli("-q", "predict-cls", "squares@1", *img, tmp_path / "a.csv", "--no-gradcam", "--allow-retired") == 0
    listed = _json_out(capsys, "models", "list", "--json")
    assert listed[0]["status"] == "retired"
    events = [json.loads(x) for x in (capsys.readouterr(), run_cli("audit", "list", "--json"),
                                      capsys.readouterr().out)[2].splitlines()]
    assert [(e["event"], e["details"]["exit_status"]) for e in events] == [
        ("models.promote", 0), ("models.promote", 0), ("models.promote", 2), ("predict-cls", 2), ("predict-cls", 2),
        ("predict-cls", 0)]
    assert events[0]["details"]["status"] == "approved" and events[1]["details"]["status"] == "retired"


def test_a_command_whose_audit_record_cannot_be_written_fails(cls_package: Path, square_manifest: Path,
                                                              tmp_path: Path, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    img = _images(square_manifest, 1)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("MEDSIGHT_AUDIT_URL", f"sqlite:///{blocker}/audit.db")
    assert run_cli("-q", "predict-cls", cls_package, *img, tmp_path / "a.csv", "--no-gradcam") == 2
    assert "audit log" in capsys.readouterr().err and not (tmp_path / "a.csv").exists()
    monkeypatch.delenv("MEDSIGHT_AUDIT_URL")
    from medsight.audit.log import AuditLog

    def broken(*args, **kwargs):
        raise OSError("database is read-only")

    monkeypatch.setattr(AuditLog, "append", broken)
    assert run_cli("-q", "predict-cls", cls_package, *img, tmp_path / "b.csv", "--no-gradcam") == 2
    assert "audit record could not be written" in capsys.readouterr().err


def test_models_show_and_verify_all(cls_package: Path, capsys) -> None:
    shown = _json_out(capsys, "models", "show", "squares", "--json")
    assert shown["registry"]["ref"] == "squares@1" and "model.pt" in shown["manifest"]["files"]
    assert run_cli("models", "verify", "--all") == 0
    assert "ok  squares@1" in capsys.readouterr().out
    assert run_cli("models", "verify", "nosuchmodel") == 2
    assert "no registered model nosuchmodel" in capsys.readouterr().err
