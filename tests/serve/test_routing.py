"""Series selection and model routing: a many-series study is split, only a readable series is chosen, a study no
served package reads is answered 'unsupported' (not a crash), and a pull names only configured PACS."""

from __future__ import annotations

import copy
import shutil
import socket
import threading

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from medsight.audit.log import AuditLog
from medsight.image import Image
from medsight.io import read_image
from medsight.io.dicom_out import Algorithm, Segment, build_seg, build_sr
from medsight.serve.app import Settings, create_app
from medsight.serve.auth import add_user
from medsight.serve.routing import InputSpec, Unsupported, describe_study, result_key, route
from medsight.serve.runner import ModelRef
from medsight.serve.store import Store
from medsight.serve.worker import _model_for, process_one

SEG3D = ModelRef("toy-seg", "1", "a" * 64, "segmentation", __file__, InputSpec(dims=3).to_dict())
CLS2D = ModelRef("a-xray-classifier", "1", "b" * 64, "classification", __file__,
                 InputSpec(dims=2, min_slices=1).to_dict())  # alphabetically first, as after the demo
MR_ONLY = ModelRef("brain-mr", "1", "c" * 64, "segmentation", __file__, InputSpec(modalities=("MR",)).to_dict())


@pytest.fixture(scope="module")
def busy_study(tmp_path_factory, study_with_localizer, ct_series):
    """Volume + localizer + an earlier run's SEG and SR + a secondary capture + a DERIVED reformat."""
    out = tmp_path_factory.mktemp("busy_study")
    for p in study_with_localizer.glob("*.dcm"):
        shutil.copy(p, out / p.name)
    source = [pydicom.dcmread(p) for p in sorted(ct_series.glob("*.dcm"))]
    image = read_image(ct_series)
    lab = np.zeros(image.array.shape, np.uint8)
    lab[40:60, 30:50, 2:5] = 1
    algo = Algorithm("toy-seg", "a" * 64)
    seg = build_seg(source, Image(lab, image.geometry, image.provenance), [Segment(1, "lesion")], algo, "earlier")
    seg.save_as(out / "old_seg.dcm", enforce_file_format=True)
    build_sr(source, algo, "earlier", probability=0.5).save_as(out / "old_sr.dcm", enforce_file_format=True)
    for i, (kind, uid) in enumerate((("sc", "1.2.840.10008.5.1.4.1.1.7"), ("derived", None))):
        for k, src in enumerate(source):
            ds = copy.deepcopy(src)
            ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.{i}"
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.{i}.{k}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            if uid:
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid
            else:
                ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
            ds.save_as(out / f"{kind}_{k}.dcm", enforce_file_format=True)
    return out


def test_only_the_acquired_volume_is_readable(busy_study, ct_series):
    study = describe_study(busy_study)
    volume = pydicom.dcmread(next(ct_series.glob("*.dcm")))
    assert study.study_uid == volume.StudyInstanceUID and study.patient_id == volume.PatientID
    by_uid = {s.uid: s for s in study.series}
    assert len(by_uid) == 6
    readable = [s for s in study.series if s.excluded is None]
    assert [(s.uid, s.slices, s.modality) for s in readable] == [(volume.SeriesInstanceUID, 8, "CT")]
    reasons = sorted(s.excluded.split(",")[0].split(" (")[0] for s in study.series if s.excluded)
    assert reasons == ["a DERIVED image", "a SEG object", "a SR object", "a localizer/scout",
                       "a secondary capture"]


def test_routing_picks_the_volume_and_the_package_that_reads_it(busy_study, ct_series):
    study = describe_study(busy_study)
    model, series = route(study, [CLS2D, MR_ONLY, SEG3D])
    assert (model.name, series.uid) == ("toy-seg", pydicom.dcmread(next(ct_series.glob("*.dcm"))).SeriesInstanceUID)
    with pytest.raises(Unsupported, match="a-xray-classifier@1: CT .*\\(8 slice\\(s\\)\\): 8 slices, the model "
                                          "reads one 2D image"):
        route(study, [CLS2D, MR_ONLY])
    with pytest.raises(Unsupported, match="modality CT, the model reads MR"):
        route(study, [SEG3D], named=MR_ONLY)
    assert result_key(study.study_uid, series.uid, "a" * 64) != result_key(study.study_uid, series.uid, "b" * 64)


def _service(tmp_path, models, **kw):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'serve.sqlite'}",
                        audit_url=f"sqlite:///{tmp_path / 'audit.sqlite'}", models=models, **kw)
    store = Store(settings.db_url)
    h = {"Authorization": f"Bearer {add_user(store, 'u', 'admin')}"}
    return TestClient(create_app(settings)), settings, store, h


def test_a_study_no_package_reads_is_unsupported_not_a_crash(tmp_path, ct_series):
    client, settings, store, h = _service(tmp_path, [CLS2D])
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(ct_series.glob("*.dcm"))]
    job_id = client.post("/api/v1/studies", files=files, headers=h).json()["job_id"]
    assert process_one(settings, store, AuditLog(settings.audit_url), "w1")
    job = client.get(f"/api/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "unsupported" and "no served model reads this study" in job["error"]
    assert "8 slices, the model reads one 2D image" in job["error"]
    events = [r.event for r in AuditLog(settings.audit_url).records() if r.event.startswith("job_")]
    assert events == ["job_unsupported"]
    assert not (settings.home / "results").exists()


def test_a_queued_job_follows_its_model_to_the_new_approved_version(tmp_path):
    settings = Settings(home=tmp_path, db_url="sqlite://", audit_url="sqlite://",
                        models=[ModelRef("toy-seg", "2", "d" * 64, "segmentation", tmp_path)])
    job = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    jid = job.add_job(model="toy-seg@1", study_uid="1.2", source="upload", submitted_by="u")
    model, note = _model_for(settings, job.job(jid))
    assert model.version == "2" and note == "queued for toy-seg@1, run by toy-seg@2 (the version served now)"
    jid = job.add_job(model="gone@1", study_uid="1.2", source="upload", submitted_by="u")
    with pytest.raises(LookupError, match="no longer served"):
        _model_for(settings, job.job(jid))


class _Listener:
    """A TCP port that records whether anything connected to it (the SSRF target)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/dicom-web"
        self.hits, self.stop = 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()


def test_a_pull_naming_another_url_is_refused_audited_and_never_fetched(tmp_path):
    target = _Listener()
    try:
        client, settings, store, h = _service(tmp_path, [SEG3D], dicomweb_url="http://127.0.0.1:9/dicom-web/")
        r = client.post("/api/v1/studies/pull", json={"study_uid": "1.2.3", "dicomweb_url": target.url}, headers=h)
        assert r.status_code == 400 and "not one the service is configured to contact" in r.json()["detail"]
        assert store.jobs() == []
        refused = [x for x in AuditLog(settings.audit_url).records() if x.event == "pull_refused"]
        assert [(x.actor, x.details["dicomweb_url"]) for x in refused] == [("u", target.url)]
        # the configured one (written differently) is accepted
        ok = client.post("/api/v1/studies/pull", json={"study_uid": "1.2.3",
                                                       "dicomweb_url": "http://127.0.0.1:9/dicom-web"}, headers=h)
        assert ok.status_code == 202
        # a job whose URL was changed in the database behind the API is refused by the worker too
        jid = store.add_job(model="auto", study_uid="1.2.3", source="dicomweb", submitted_by="u",
                            dicomweb_url=target.url, push=True)
        with store.engine.begin() as c:  # leave only the tampered job claimable
            from sqlalchemy import update

            from medsight.serve.store import jobs
            c.execute(update(jobs).where(jobs.c.id == ok.json()["job_id"]).values(status="failed"))
        assert process_one(settings, store, AuditLog(settings.audit_url), "w1")
        job = store.job(jid)
        assert job.status == "failed" and "not one the service is configured to contact" in job.error
        assert target.hits == 0
    finally:
        target.stop.set()
