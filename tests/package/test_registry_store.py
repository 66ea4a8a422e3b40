"""Model registry: manifest hashes against hashlib, content-derived id, tamper detection, CLI."""

from __future__ import annotations

import hashlib
import json

import pytest

from medsight.cli.main import main
from medsight.errors import ConfigError, IntegrityError
from medsight.package.registry import ModelCard, get_model, list_models, register_model, verify_model


@pytest.fixture
def model_dir(tmp_path):
    src = tmp_path / "trained"
    (src / "fold_0").mkdir(parents=True)
    (src / "fold_0" / "weights.pt").write_bytes(bytes(range(256)) * 40)
    (src / "plan.json").write_text(json.dumps({"patch_size": [64, 64, 64], "spacing": [1, 1, 1]}))
    (src / "calibration.json").write_text(json.dumps({"temperature": {"lesion": 1.3}}))
    return src


@pytest.fixture
def card():
    return ModelCard(name="brain-seg", task="segmentation", intended_use="Research segmentation of T1 MRI.",
                     data={"sites": ["site_A", "site_B"], "n_cases": 40},
                     performance={"overall": {"dice": 0.81}, "by_site": {"site_A": {"dice": 0.83},
                                                                          "site_C": {"dice": 0.74}}},
                     limitations=["Not validated on paediatric scans."])


def test_register_hashes_every_file(model_dir, card, tmp_path):
    rec = register_model(model_dir, "brain-seg", card, {"data_manifest_hash": "d" * 64, "metrics": {"dice": 0.81}},
                         root=tmp_path / "reg")
    for rel in ("fold_0/weights.pt", "plan.json", "calibration.json"):
        assert rec.files[rel] == hashlib.sha256((model_dir / rel).read_bytes()).hexdigest()
    assert rec.files["model_card.json"] == hashlib.sha256((rec.path / "model_card.json").read_bytes()).hexdigest()
    manifest = json.loads((rec.path / "manifest.json").read_text())
    body = {k: v for k, v in manifest.items() if k not in ("id", "registered_at")}
    assert rec.id == manifest["id"] == hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert manifest["data_manifest_hash"] == "d" * 64 and "torch" in manifest["library_versions"]
    assert rec.card == card and rec.path.parent.name == "brain-seg"
    assert verify_model("brain-seg", root=tmp_path / "reg").id == rec.id
    # same content again: same record; same version with other content: refused
    assert register_model(model_dir, "brain-seg", card, {"data_manifest_hash": "d" * 64, "metrics": {"dice": 0.81}},
                          root=tmp_path / "reg").id == rec.id
    register_model(model_dir, "brain-seg", card, {"version": "v2"}, root=tmp_path / "reg")
    with pytest.raises(ConfigError, match="already exists"):
        register_model(model_dir, "brain-seg", card, {"version": "v2", "note": "x"}, root=tmp_path / "reg")
    assert [r.version for r in list_models(tmp_path / "reg")] == [rec.version, "v2"]
    assert get_model("brain-seg", root=tmp_path / "reg").version == "v2"


@pytest.mark.parametrize("tamper, words", [
    (lambda p: (p / "fold_0" / "weights.pt").write_bytes(b"\xff" + (p / "fold_0" / "weights.pt").read_bytes()[1:]),
     "fold_0/weights.pt was altered"),
    (lambda p: (p / "plan.json").unlink(), "plan.json is missing"),
    (lambda p: (p / "extra.bin").write_bytes(b"1"), "unexpected file extra.bin"),
    (lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text().replace('"v1"', '"v9"')),
     "manifest.json was edited"),
])
def test_tampering_detected(model_dir, card, tmp_path, tamper, words):
    rec = register_model(model_dir, "m", card, {"version": "v1"}, root=tmp_path / "reg")
    tamper(rec.path)
    with pytest.raises(IntegrityError, match=words):
        verify_model("m", root=tmp_path / "reg")


def test_cli_list_show_verify(model_dir, card, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    rec = register_model(model_dir, "brain-seg", card, {"version": "v1"})
    main(["models", "list"])
    assert "brain-seg" in capsys.readouterr().out
    main(["models", "show", "brain-seg"])
    out = capsys.readouterr().out
    assert rec.id in out and "Not validated on paediatric scans." in out and "| site_C | 0.74 |" in out
    main(["models", "verify", "brain-seg"])
    assert "ok  brain-seg/v1" in capsys.readouterr().out
    weights = rec.path / "fold_0" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    with pytest.raises(SystemExit) as exc:
        main(["models", "verify", "brain-seg"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "fold_0/weights.pt was altered" in err and "Traceback" not in err


def test_model_card_roundtrip_and_markdown(card):
    again = ModelCard.from_dict({**card.to_dict(), "future_field": 1})
    assert again.extra == {"future_field": 1} and again.performance == card.performance
    assert ModelCard.from_json(card.to_json()) == card
    md = card.to_markdown()
    assert md.startswith("# Model card: brain-seg") and "## Intended use" in md and "| site_A | 0.83 |" in md
