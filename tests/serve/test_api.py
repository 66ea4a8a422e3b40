"""The service's API: authentication and roles, upload checks, nothing stored for a refused request, audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medsight.audit.log import AuditLog
from medsight.serve.app import Settings, create_app
from medsight.serve.auth import add_user
from medsight.serve.runner import ModelRef
from medsight.serve.store import Store


@pytest.fixture()
def service(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'serve.sqlite'}",
                        audit_url=f"sqlite:///{tmp_path / 'audit.sqlite'}",
                        models=[ModelRef("toy-seg", "1", "f" * 64, "segmentation", tmp_path)],
                        max_upload_bytes=2_000_000)
    client = TestClient(create_app(settings))
    store = Store(settings.db_url)
    tokens = {role: add_user(store, f"{role}-user", role) for role in ("submitter", "reader", "admin")}
    return client, settings, store, tokens


def _files(folder: Path, names=None):
    paths = sorted(folder.glob("*.dcm"))
    return [("files", ((names or {}).get(p.name, p.name), p.read_bytes(), "application/dicom")) for p in paths]


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _stored(settings):
    inputs = settings.home / "inputs"
    return sorted(p.relative_to(settings.home) for p in inputs.rglob("*")) if inputs.exists() else []


def test_tokens_and_roles(service, ct_series):
    client, settings, store, tokens = service
    assert client.post("/api/v1/studies", files=_files(ct_series)).status_code == 401
    assert client.post("/api/v1/studies", files=_files(ct_series), headers=_auth("msk_wrong")).status_code == 401
    r = client.post("/api/v1/studies", files=_files(ct_series), headers=_auth(tokens["reader"]))
    assert r.status_code == 403 and "reader" in r.json()["detail"]
    assert client.get("/api/v1/worklist", headers=_auth(tokens["submitter"])).status_code == 403
    assert _stored(settings) == [] and store.jobs() == []
    r = client.post("/api/v1/studies", files=_files(ct_series), headers=_auth(tokens["submitter"]))
    assert r.status_code == 202
    job = client.get(f"/api/v1/jobs/{r.json()['job_id']}", headers=_auth(tokens["reader"])).json()
    assert job["status"] == "queued" and job["submitted_by"] == "submitter-user"
    rows = client.get("/api/v1/worklist", headers=_auth(tokens["reader"])).json()
    assert [x["job_id"] for x in rows] == [job["id"]]
    store.revoke_user("submitter-user")
    assert client.post("/api/v1/studies", files=_files(ct_series),
                       headers=_auth(tokens["submitter"])).status_code == 401
    # the stored token is a digest, never the token itself
    assert all(tokens["admin"] not in str(u) for u in store.list_users())


def test_refused_uploads_store_nothing(service, ct_series, tmp_path):
    client, settings, store, tokens = service
    h = _auth(tokens["submitter"])
    r = client.post("/api/v1/studies", files=[("files", ("notes.txt", b"hello, not dicom", "text/plain"))], headers=h)
    assert r.status_code == 400 and "not a DICOM" in r.json()["detail"] and "notes.txt" in r.json()["detail"]
    big = [("files", ("big.dcm", b"\0" * 2_100_000, "application/dicom"))]
    assert client.post("/api/v1/studies", files=big, headers=h).status_code == 413
    # a second patient in the same upload
    import pydicom

    other = tmp_path / "other"
    other.mkdir()
    ds = pydicom.dcmread(next(ct_series.glob("*.dcm")))
    ds.PatientID = "SOMEONE-ELSE"
    ds.SOPInstanceUID = "1.2.3.999"
    ds.save_as(other / "x.dcm")
    r = client.post("/api/v1/studies", files=_files(ct_series) + _files(other), headers=h)
    assert r.status_code == 400 and "patients" in r.json()["detail"]
    assert client.post("/api/v1/studies", files=[], headers=h).status_code in (400, 422)
    assert _stored(settings) == [] and store.jobs() == []


def test_path_traversal_names_cannot_escape_the_store(service, ct_series, tmp_path):
    client, settings, store, tokens = service
    evil = {p.name: f"../../../{p.name}" for p in ct_series.glob("*.dcm")}
    evil["slice_00.dcm"] = "/etc/cron.d/slice_00.dcm"
    r = client.post("/api/v1/studies", files=_files(ct_series, evil), headers=_auth(tokens["submitter"]))
    assert r.status_code == 202
    stored = list((settings.home / "inputs" / r.json()["job_id"]).iterdir())
    assert len(stored) == 8 and all(p.parent == settings.home / "inputs" / r.json()["job_id"] for p in stored)
    assert all(len(p.stem) == 32 and "slice" not in p.name for p in stored)
    assert not list(tmp_path.glob("slice_*")) and not Path("/etc/cron.d/slice_00.dcm").exists()


def test_every_request_is_audited_with_its_user(service, ct_series):
    client, settings, store, tokens = service
    client.get("/api/v1/worklist")
    client.get("/api/v1/worklist", headers=_auth(tokens["submitter"]))
    client.get("/api/v1/worklist", headers=_auth(tokens["reader"]))
    events = [(r.actor, r.details["path"], r.details["status"]) for r in AuditLog(settings.audit_url).records()
              if r.event == "http_request"]
    assert events == [("anonymous", "/api/v1/worklist", 401), ("submitter-user", "/api/v1/worklist", 403),
                      ("reader-user", "/api/v1/worklist", 200)]
    assert AuditLog(settings.audit_url).verify()


def test_login_sets_an_httponly_cookie_and_shows_the_worklist(service):
    client, settings, store, tokens = service
    assert client.get("/worklist", follow_redirects=False).status_code == 303
    r = client.post("/login", data={"token": "msk_nope"})
    assert r.status_code == 401
    r = client.post("/login", data={"token": tokens["reader"]}, follow_redirects=False)
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    page = client.get("/worklist")
    assert page.status_code == 200 and "Signed in as reader-user" in page.text
    client.post("/logout")
    assert client.get("/worklist", follow_redirects=False).status_code == 303


def test_rotate_gives_a_new_token_and_ends_the_old_one(service, ct_series):
    from medsight.serve.auth import rotate_user

    client, settings, store, tokens = service
    old = tokens["reader"]
    client.post("/login", data={"token": old}, follow_redirects=False)
    assert client.get("/worklist").status_code == 200
    store.revoke_user("reader-user")
    new = rotate_user(store, "reader-user")  # a revoked user's name can be given a new token
    assert new != old and new.startswith("msk_")
    assert client.get("/api/v1/worklist", headers=_auth(old)).status_code == 401
    assert client.get("/worklist", follow_redirects=False).status_code == 303  # the old session ended too
    assert client.get("/api/v1/worklist", headers=_auth(new)).status_code == 200


def test_users_rotate_on_the_command_line(tmp_path, capsys):
    from medsight.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            main([*args, "--home", str(tmp_path / "h")])
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out.strip(), out.err

    code, first, _ = run("users", "add", "ann", "--role", "reader")
    assert code == 0 and first.startswith("msk_")
    code, _, err = run("users", "add", "ann", "--role", "reader")
    assert code == 2 and "users rotate ann" in err and "Traceback" not in err
    code, second, _ = run("users", "rotate", "ann")
    assert code == 0 and second.startswith("msk_") and second != first
    code, _, err = run("users", "rotate", "bob")
    assert code == 2 and "no user 'bob'" in err


def test_openapi_declares_bearer_auth_and_the_multipart_upload(service):
    client, *_ = service
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert [(v["type"], v["scheme"]) for v in schemes.values()] == [("http", "bearer")]
    submit = spec["paths"]["/api/v1/studies"]["post"]
    assert submit["security"] == [{name: []} for name in schemes]
    body = submit["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["files"]["items"]["format"] == "binary" and body["required"] == ["files"]
