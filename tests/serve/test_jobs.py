"""Jobs run end to end, survive a killed worker (finished exactly once) and a restarted server (real processes)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient

from medsight.audit.log import AuditLog
from medsight.serve.app import Settings, create_app
from medsight.serve.auth import add_user
from medsight.serve.models import resolve_models
from medsight.serve.routing import InputSpec
from medsight.serve.runner import ModelRef
from medsight.serve.store import Store
from medsight.serve.worker import process_one

pytestmark = pytest.mark.slow


def _settings(tmp_path, seg_package, lease_s=60.0) -> Settings:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return Settings(home=home, db_url=f"sqlite:///{home / 'serve.sqlite'}",
                    audit_url=f"sqlite:///{tmp_path / 'audit.sqlite'}", models=resolve_models([str(seg_package)]),
                    lease_s=lease_s, tta=False)


def _upload(ct_series):
    return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(ct_series.glob("*.dcm"))]


def _done_events(settings, job_id):
    return [r for r in AuditLog(settings.audit_url).records() if r.event == "job_done" and r.details["job_id"] == job_id]


def test_a_study_with_a_localizer_runs_on_its_volume_once(tmp_path, seg_package, study_with_localizer, ct_series):
    """Acceptance: a 3-slice localizer + the volume, no model named -> done, SEG + SR for the volume series only;
    the same study uploaded again, and a job queued for an older version, store nothing new."""
    settings = _settings(tmp_path, seg_package)
    cls2d = ModelRef("a-xray-classifier", "1", "b" * 64, "classification", tmp_path,
                     InputSpec(dims=2, min_slices=1).to_dict())  # alphabetically first, as after the demo
    settings.models = [cls2d, *settings.models]
    client = TestClient(create_app(settings))
    store = Store(settings.db_url)
    token = add_user(store, "ward", "admin")
    h = {"Authorization": f"Bearer {token}"}
    job_id = client.post("/api/v1/studies", files=_upload(study_with_localizer), headers=h).json()["job_id"]
    assert process_one(settings, store, AuditLog(settings.audit_url), "w1") is True
    job = client.get(f"/api/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "done", job["error"]
    res, seg = job["result"], settings.models[1]
    volume = pydicom.dcmread(next(ct_series.glob("*.dcm"))).SeriesInstanceUID
    assert res["package_id"] == settings.models[1].package_id and res["task"] == "segmentation"
    assert res["series_uid"] == volume and job["model"] == seg.name + "@" + seg.version
    name = seg.name
    seg = pydicom.dcmread(settings.home / "results" / job_id / "seg.dcm")
    sr = pydicom.dcmread(settings.home / "results" / job_id / "sr.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume
    assert {s.SeriesInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
            for s in e.ReferencedSeriesSequence} == {volume, seg.SeriesInstanceUID}  # no localizer reference
    assert seg.SegmentSequence[0].SegmentAlgorithmName == settings.models[1].name
    assert client.get(f"/api/v1/jobs/{job_id}/files/sr.dcm", headers=h).status_code == 200
    assert client.get(f"/api/v1/jobs/{job_id}/files/../../serve.sqlite", headers=h).status_code == 404
    row = client.get("/api/v1/worklist", headers=h).json()[0]
    assert row["job_id"] == job_id and row["thumbnail"].endswith("thumbnail.png")
    assert len(_done_events(settings, job_id)) == 1
    assert process_one(settings, store, AuditLog(settings.audit_url), "w1") is False  # queue empty
    # the same study again (a re-upload), and one queued for a version no longer served: the same result
    again = client.post("/api/v1/studies", files=_upload(study_with_localizer), headers=h).json()["job_id"]
    old = store.add_job(model=f"{name}@0", study_uid=job["study_uid"], source="upload", submitted_by="ward")
    shutil.copytree(settings.home / "inputs" / again, settings.home / "inputs" / old)
    for jid in (again, old):
        assert process_one(settings, store, AuditLog(settings.audit_url), "w1")
        other = store.job(jid)
        assert other.status == "done" and other.summary["same_result_as"] == job_id, other.error
        seg2 = pydicom.dcmread(settings.home / "results" / jid / "seg.dcm")
        assert (seg2.SOPInstanceUID, seg2.SeriesInstanceUID) == (seg.SOPInstanceUID, seg.SeriesInstanceUID)
    assert store.job(old).model == job["model"] and f"queued for {name}@0" in store.job(old).summary["rerouted"]
    rerouted = [r for r in AuditLog(settings.audit_url).records() if r.event == "job_rerouted"]
    assert [(r.details["job_id"], r.details["model"]) for r in rerouted] == [(old, f"{name}@0")]


def _worker(settings: Settings, name: str) -> subprocess.Popen:
    code = ("import sys; from medsight.serve.worker import worker_main; "
            "worker_main(sys.stdin.read(), sys.argv[1], poll_s=0.1)")
    log = open(settings.home / f"worker-{name}.log", "w")
    p = subprocess.Popen([sys.executable, "-c", code, name], stdin=subprocess.PIPE, stdout=log, stderr=log,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    p.stdin.write(settings.to_json().encode())
    p.stdin.close()
    return p


def _wait(pred, timeout_s: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} ({got})")


def test_a_killed_worker_s_job_is_finished_exactly_once(tmp_path, seg_package, ct_series):
    settings = _settings(tmp_path, seg_package, lease_s=4.0)
    client = TestClient(create_app(settings))
    store = Store(settings.db_url)
    h = {"Authorization": f"Bearer {add_user(store, 'ward', 'admin')}"}
    job_id = client.post("/api/v1/studies", files=_upload(ct_series), headers=h).json()["job_id"]
    a = _worker(settings, "A")
    try:
        _wait(lambda: (j := store.job(job_id)) and j.status == "running" and j.worker == "A", 120, "worker A")
        os.kill(a.pid, signal.SIGKILL)  # mid-run: A holds the claim, has written nothing final
    finally:
        a.wait(10)
    assert store.job(job_id).status == "running"
    half = settings.home / "results" / f".{job_id}.killed"  # what A leaves when killed while writing its result
    half.mkdir(parents=True, exist_ok=True)
    (half / "seg.dcm").write_bytes(b"partial")
    b = _worker(settings, "B")
    try:
        job = _wait(lambda: (j := store.job(job_id)) and j.status == "done" and _done_events(settings, job_id) and j,
                    300, "worker B to finish and audit the job")
    finally:
        b.kill()
        b.wait(10)
    assert job.worker == "B" and job.attempts == 2
    assert len(_done_events(settings, job_id)) == 1, (settings.home / "worker-B.log").read_text()
    results = settings.home / "results"
    assert sorted(p.name for p in (results / job_id).iterdir()) == ["result.json", "seg.dcm", "sr.dcm",
                                                                     "thumbnail.png"]
    assert [p.name for p in results.iterdir()] == [job_id]  # no half-written temporary folder left


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(home: Path, port: int, seg_package: Path, tmp_path: Path, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDSIGHT_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.sqlite'}"}
    return subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "serve", "--home", str(home), "--port",
                             str(port), "--model", str(seg_package), "--workers", str(workers), "--no-tta"], env=env,
                            start_new_session=True)


def test_a_restarted_server_loses_no_job(tmp_path, seg_package, ct_series):
    home, port = tmp_path / "home", _free_port()
    home.mkdir()
    token = subprocess.run([sys.executable, "-m", "medsight.cli.main", "users", "add", "ward", "--role", "admin",
                            "--home", str(home)], capture_output=True, text=True, check=True).stdout.strip()
    h = {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}"
    server = _serve(home, port, seg_package, tmp_path)
    try:
        _wait(lambda: _up(url), 120, "the server to start")
        ids = [httpx.post(f"{url}/api/v1/studies", files=_upload(ct_series), headers=h, timeout=60).json()["job_id"]
               for _ in range(2)]
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server and its worker, before the jobs are done
        server.wait(10)
    store = Store(f"sqlite:///{home / 'serve.sqlite'}")
    assert {store.job(i).status for i in ids} <= {"queued", "running"}
    server = _serve(home, port, seg_package, tmp_path)
    try:
        _wait(lambda: all(store.job(i).status == "done" for i in ids), 240, "both jobs after the restart")
        rows = httpx.get(f"{url}/api/v1/worklist", headers=h, timeout=30).json()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
    # the same study twice: the second job reuses the first's result, and the worklist lists the study once
    reused = [store.job(i) for i in ids if "same_result_as" in store.job(i).summary]
    assert len(reused) == 1 and reused[0].summary["same_result_as"] in ids
    assert [r["job_id"] for r in rows] == [i for i in ids if i != reused[0].id]
    done = [r for r in AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}").records() if r.event == "job_done"]
    assert sorted(r.details["job_id"] for r in done) == sorted(ids)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
