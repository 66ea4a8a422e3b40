"""PACS round trip with a real Orthanc: the CT series is stored there, the service pulls it over DICOMweb, runs
the model and pushes the SEG and SR back with STOW-RS; the test reads them back from Orthanc."""

from __future__ import annotations

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient

from medsight.audit.log import AuditLog
from medsight.serve.app import Settings, create_app
from medsight.serve.auth import add_user
from medsight.serve.models import resolve_models
from medsight.serve.store import Store
from medsight.serve.worker import process_one

from .orthanc import Orthanc

pytestmark = pytest.mark.slow


def test_pull_run_and_push_back_through_orthanc(tmp_path, seg_package, ct_series):
    with Orthanc(tmp_path / "orthanc") as pacs:
        client = DICOMwebClient(url=pacs.dicomweb)
        source = [pydicom.dcmread(p) for p in sorted(ct_series.glob("*.dcm"))]
        client.store_instances(source)
        study_uid, series_uid = source[0].StudyInstanceUID, source[0].SeriesInstanceUID
        home = tmp_path / "home"
        home.mkdir()
        settings = Settings(home=home, db_url=f"sqlite:///{home / 'serve.sqlite'}",
                            audit_url=f"sqlite:///{tmp_path / 'audit.sqlite'}",
                            models=resolve_models([str(seg_package)]), dicomweb_url=pacs.dicomweb, tta=False)
        api = TestClient(create_app(settings))
        store = Store(settings.db_url)
        h = {"Authorization": f"Bearer {add_user(store, 'pacs-bridge', 'submitter')}"}
        r = api.post("/api/v1/studies/pull", json={"study_uid": study_uid}, headers=h)
        assert r.status_code == 202, r.text
        assert process_one(settings, store, AuditLog(settings.audit_url), "w1")
        job = store.job(r.json()["job_id"])
        assert job.status == "done", job.error
        assert job.summary["pushed_to"] == pacs.dicomweb
        series = client.search_for_series(study_uid)
        modalities = sorted(s["00080060"]["Value"][0] for s in series)
        assert modalities == ["CT", "SEG", "SR"]
        by_mod = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in series}
        seg = client.retrieve_series(study_uid, by_mod["SEG"])[0]
        sr = client.retrieve_series(study_uid, by_mod["SR"])[0]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        assert seg.SOPInstanceUID == job.summary["seg_sop_uid"] and sr.SOPInstanceUID == job.summary["sr_sop_uid"]
        assert seg.SegmentSequence[0].SegmentAlgorithmName == settings.models[0].name
        evidence = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                    for se in s.ReferencedSeriesSequence for r in se.ReferencedSOPSequence}
        assert {d.SOPInstanceUID for d in source} <= evidence
        # the SR's lesion volumes are the job's measured lesions
        volumes = sorted(float(i.MeasuredValueSequence[0].NumericValue) for i in _items(sr)
                         if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeMeaning == "Volume")
        assert volumes == pytest.approx(sorted(x["volume_ml"] for x in job.summary["lesions"]))
        # pushing the same result again stores nothing new (same SOP Instance UIDs)
        from medsight.serve.worker import push_dicomweb

        push_dicomweb(pacs.dicomweb, [home / "results" / job.id / "seg.dcm"])
        assert len(client.search_for_instances(study_uid, by_mod["SEG"])) == 1


def _items(ds):
    for it in getattr(ds, "ContentSequence", []):
        yield it
        yield from _items(it)
