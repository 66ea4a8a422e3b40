"""One audit event per command run (predict-cls, deid, evaluate, export, models package/promote, users
add/revoke/rotate/orthanc-hook, calibrate's refusal included), the package ids and the user named, never a token;
the chain verifies; a command whose audit record cannot be written exits 2; every command of the table is audited
or named as not an event."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import data_manager

from medsight.cli.main import main
from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti

from test_bad_input import _classifier_packages


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    try:
        main(["-q", *map(str, args)])
        code = 0
    except SystemExit as err:
        code = int(err.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow  # eleven commands in one process, an ONNX export among them (~80 s on a loaded 2-core box)
def test_each_command_leaves_one_event_and_the_chain_verifies(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    cls_pkg, _ = _classifier_packages(tmp_path / "m")
    (tmp_path / "pred.csv").write_text("case_id,y_true,y_score\n" + "".join(
        f"c{i},{i % 2},{(i % 7) / 7:.3f}\n" for i in range(30)))
    img = Image(np.zeros((6, 6, 4), dtype=np.uint8), Geometry.identity(3))
    for d in ("p", "r"):
        write_nifti(img, tmp_path / d / "c0.nii.gz", sidecar=False)
    slice2d = Image(np.arange(400, dtype=np.float32).reshape(20, 20), Geometry.identity(2))
    write_nifti(slice2d, tmp_path / "slice.nii.gz", sidecar=False)
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "a.dcm").write_bytes((Path(data_manager.DATA_ROOT) / "test_files" / "CT_small.dcm")
                                               .read_bytes())
    commands = [
        ("predict-cls", ("predict-cls", cls_pkg, tmp_path / "slice.nii.gz", tmp_path / "cls.csv")),
        ("deid.run", ("deid", tmp_path / "dicom", tmp_path / "deid", "-j", "1")),
        ("evaluate.cls", ("evaluate", "cls", tmp_path / "pred.csv", "--threshold", "0.5", "--out", tmp_path / "e",
                          "--n-boot", "10")),
        ("evaluate.seg", ("evaluate", "seg", tmp_path / "p", tmp_path / "r", "--labels", "1=x", "--out",
                          tmp_path / "s", "--n-boot", "10")),
        ("models.package", ("models", "package", cls_pkg.parent / "cls_pkg_src", tmp_path / "pkg", "--name", "aud",
                            "--task", "classification")),
        ("models.promote", ("models", "promote", "aud@1")),
        ("export", ("export", "aud@1", tmp_path / "m.onnx")),
        ("users.add", ("users", "add", "dr-a", "--role", "reader", "--home", tmp_path / "svc")),
        ("users.revoke", ("users", "revoke", "dr-a", "--home", tmp_path / "svc")),
        ("users.rotate", ("users", "rotate", "dr-a", "--home", tmp_path / "svc")),
        ("users.orthanc-hook", ("users", "orthanc-hook", "orthanc", "--service", "http://127.0.0.1:9", "--out",
                                tmp_path / "hook.lua", "--home", tmp_path / "svc")),
    ]
    tokens = []
    for event, args in commands:
        code, out, err = _run(capsys, *args)
        assert code == 0, (event, out, err)
        if event in ("users.add", "users.rotate"):
            tokens.append(out.strip().splitlines()[-1])
    code, out, _ = _run(capsys, "audit", "list", "--json", "-n", "100")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["event"] for r in records] == [e for e, _ in commands]  # exactly one event per command, in order
    by = {r["event"]: r["details"] for r in records}
    pkg_id = json.loads((tmp_path / "pkg" / "manifest.json").read_text())["id"]
    assert by["models.package"]["package_id"] == by["export"]["package_id"] == pkg_id
    assert by["models.promote"]["status"] == "approved" and by["users.add"]["user"] == "dr-a"
    assert len(tokens) == 2 and not any(t in out for t in tokens)  # an access token never reaches the log
    assert by["users.rotate"]["user"] == "dr-a" and by["users.orthanc-hook"]["rotated"] is False
    assert by["evaluate.cls"]["inputs"][0]["sha256"] and by["export"]["outputs"]
    cls_id = json.loads((cls_pkg / "manifest.json").read_text())["id"]
    assert by["predict-cls"]["package_id"] == cls_id and by["deid.run"]["outputs"]
    code, out, _ = _run(capsys, "audit", "verify")
    assert code == 0 and f"{len(commands)} records, chain intact" in out


def test_a_lost_audit_record_fails_the_command(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    from medsight.audit import log as audit_log

    def broken(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(audit_log.AuditLog, "append", broken)
    (tmp_path / "pred.csv").write_text("case_id,y_true,y_score\nc1,1,0.9\nc2,0,0.2\nc3,1,0.7\nc4,0,0.4\n")
    code, _, err = _run(capsys, "evaluate", "cls", tmp_path / "pred.csv", "--threshold", "0.5", "--out",
                        tmp_path / "e", "--n-boot", "10")
    assert code == 2 and "audit record could not be written" in err and len(err.strip().splitlines()) == 1


# commands that write no clinical or model event: they read, print or prepare data (the service audits each job
# it runs in its worker, tests/serve); every other command of the table must be wrapped by ``audited``
NOT_AUDITED = {"info": "reads one image", "audit list": "reads the log", "audit verify": "reads the log",
               "models list": "reads the registry", "models show": "reads the registry",
               "models verify": "re-hashes a package, changes nothing", "users list": "reads the user table",
               "federated app": "writes the Flower app code", "federated node-config": "prints a config line",
               "wsi info": "reads one slide", "wsi tile": "prepares data (hashed tiling manifest)",
               "wsi features": "prepares data (hashed feature files)", "plan": "prepares data (a plan JSON)",
               "serve": "each job is audited by the worker", "demo": "a walkthrough on synthetic data"}


def test_every_command_is_audited_or_named_as_not_an_event() -> None:
    """A command added to the table must either be ``audited`` (it then takes --actor) or be named above."""
    from test_malformed_sweep import _leaves

    audited = {" ".join(path) for path, cmd in _leaves() if any(p.name == "actor" for p in cmd.params)}
    everything = {" ".join(path) for path, _ in _leaves()}
    assert everything - audited == set(NOT_AUDITED)
    assert {"users add", "users revoke", "users rotate", "models package", "models promote", "export", "evaluate cls",
            "evaluate seg", "federated run", "train-mil", "predict-mil", "calibrate"} <= audited
