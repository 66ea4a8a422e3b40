"""The OHIF viewer's routes (fast; the real viewer in Chromium is tests/serve/test_orthanc_trigger.py): readers only,
the service's own routes not shadowed, no file outside the viewer's folder, and a DICOMweb proxy that reaches the
configured PACS only and passes it neither the user's token nor the session cookie."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from medsight.errors import ConfigError
from medsight.serve.app import Settings, create_app
from medsight.serve.auth import add_user
from medsight.serve.runner import ModelRef
from medsight.serve.store import Store
from medsight.serve.viewer import check_viewer_dir, viewer_link
from medsight.serve.worklist import order_rows


class _Pacs(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802
        _Pacs.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        body = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a) -> None:  # noqa: ANN002
        pass


@pytest.fixture()
def viewer(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>OHIF Viewer</title>")
    (dist / "app.bundle.abc.js").write_text("console.log('ohif')")
    (tmp_path / "secret.txt").write_text("not the viewer's")
    pacs = ThreadingHTTPServer(("127.0.0.1", 0), _Pacs)
    threading.Thread(target=pacs.serve_forever, daemon=True).start()
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'serve.sqlite'}",
                        audit_url=f"sqlite:///{tmp_path / 'audit.sqlite'}",
                        models=[ModelRef("toy-seg", "1", "f" * 64, "segmentation", tmp_path)],
                        dicomweb_url=f"http://127.0.0.1:{pacs.server_address[1]}/dicom-web", viewer=str(dist))
    client = TestClient(create_app(settings))
    store = Store(settings.db_url)
    tokens = {role: add_user(store, f"{role}-user", role) for role in ("submitter", "reader")}
    _Pacs.seen = []
    yield client, tokens
    pacs.shutdown()


def test_the_viewer_is_for_signed_in_readers_and_hides_nothing_of_the_service(viewer):
    client, tokens = viewer
    for path in ("/app-config.js", "/app.bundle.abc.js", "/dicom-web/studies"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": f"Bearer {tokens['submitter']}"}).status_code == 401
    r = client.get("/viewer?StudyInstanceUIDs=1.2.3", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert _Pacs.seen == []  # nothing reached the PACS for the refused
    reader = {"Authorization": f"Bearer {tokens['reader']}"}
    r = client.get("/viewer?StudyInstanceUIDs=1.2.3", headers=reader)
    assert r.status_code == 200 and "OHIF Viewer" in r.text  # the single-page app's routes answer index.html
    config = client.get("/app-config.js", headers=reader)
    assert config.headers["content-type"].startswith("text/javascript")
    assert "wadoRoot: window.location.origin + '/dicom-web'" in config.text and "disableConfirmationPrompts: true" \
        in config.text
    assert client.get("/app.bundle.abc.js", headers=reader).text == "console.log('ohif')"
    for path in ("/nothing-here", "/..%2Fsecret.txt", "/%2e%2e/secret.txt", "/dist/../secret.txt"):
        assert client.get(path, headers=reader).status_code == 404, path
    assert client.get("/api/v1/worklist", headers=reader).json() == []  # the service's routes come first
    assert client.get("/healthz").json()["status"] == "ok"
    assert "swagger" in client.get("/docs").text.lower()


def test_the_dicomweb_proxy_reaches_the_configured_pacs_without_the_user_s_credentials(viewer):
    client, tokens = viewer
    client.cookies.set("medsight_session", "a-session-id")
    r = client.get("/dicom-web/studies?PatientID=P1&includefield=all",
                   headers={"Authorization": f"Bearer {tokens['reader']}", "Accept": "application/dicom+json"})
    assert r.status_code == 200 and r.json()[0]["0020000D"]["Value"] == ["1.2.3"]
    (seen,) = _Pacs.seen
    assert seen["path"] == "/dicom-web/studies?PatientID=P1&includefield=all"
    assert seen["headers"]["accept"] == "application/dicom+json"
    assert "authorization" not in seen["headers"] and "cookie" not in seen["headers"]
    assert client.get("/dicom-web/studies/../../system", headers={"Authorization": f"Bearer {tokens['reader']}"}
                      ).status_code in (400, 404)
    assert len(_Pacs.seen) == 1


def test_the_worklist_links_a_study_to_ohif_once_its_results_are_in_the_pacs(tmp_path):
    class J:  # the fields order_rows reads
        def __init__(self, jid, status, summary, source="dicomweb"):
            self.id, self.status, self.summary, self.source = jid, status, summary, source
            self.study_uid, self.model, self.submitted_at, self.error, self.study = f"1.2.{jid}", "m@1", 0.0, None, {}

    jobs = [J("1", "done", {"pushed_to": "http://pacs/dicom-web", "seg_series_uid": "2.25.9"}),
            J("2", "done", {}, source="upload"), J("3", "running", {})]
    rows = {r["job_id"]: r["viewer"] for r in order_rows(jobs, viewer=True)}
    assert rows == {"1": "/viewer?StudyInstanceUIDs=1.2.1&initialSeriesInstanceUID=2.25.9", "2": None, "3": None}
    assert {r["viewer"] for r in order_rows(jobs)} == {None}  # no viewer served: no link
    assert viewer_link("1.2 3") == "/viewer?StudyInstanceUIDs=1.2%203"
    with pytest.raises(ConfigError, match="not a built OHIF viewer"):
        check_viewer_dir(tmp_path)
