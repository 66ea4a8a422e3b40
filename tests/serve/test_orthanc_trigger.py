"""Orthanc triggers medsight with no manual call: a study sent to a real Orthanc becomes stable, the Lua hook
written by `medsight users orthanc-hook` queues it, a real `medsight serve` pulls it, and SEG + SR appear in
Orthanc, once (the hook fires again when they arrive; that repeat stores nothing new)."""

from __future__ import annotations

import os
import signal
import stat

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from medsight.cli.main import main
from medsight.serve.store import Store

from .orthanc import Orthanc
from .test_jobs import _free_port, _up, _wait

pytestmark = pytest.mark.slow


def test_a_study_sent_to_orthanc_comes_back_with_seg_and_sr(tmp_path, seg_package, study_with_localizer):
    import subprocess
    import sys

    home, port = tmp_path / "home", _free_port()
    hook = tmp_path / "medsight.lua"
    main(["users", "orthanc-hook", "pacs-bridge", "--service", f"http://127.0.0.1:{port}", "--out", str(hook),
          "--home", str(home)])
    assert stat.S_IMODE(hook.stat().st_mode) == 0o600 and "OnStableStudy" in hook.read_text()
    assert Store(f"sqlite:///{home / 'serve.sqlite'}").user("pacs-bridge")["role"] == "submitter"
    with Orthanc(tmp_path / "orthanc", LuaScripts=[str(hook)]) as pacs:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDSIGHT_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.sqlite'}"}
        server = subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "serve", "--home", str(home), "--port",
                                   str(port), "--model", str(seg_package), "--workers", "1", "--no-tta",
                                   "--dicomweb", pacs.dicomweb], env=env, start_new_session=True)
        try:
            _wait(lambda: _up(f"http://127.0.0.1:{port}"), 120, "the service")
            client = DICOMwebClient(url=pacs.dicomweb)
            source = [pydicom.dcmread(p) for p in sorted(study_with_localizer.glob("*.dcm"))]
            client.store_instances(source)  # the only call: a modality sending its study to the PACS
            study_uid = source[0].StudyInstanceUID

            def modalities():
                return sorted(s["00080060"]["Value"][0] for s in client.search_for_series(study_uid))

            assert _wait(lambda: modalities() == ["CT", "CT", "SEG", "SR"], 300, "SEG and SR in Orthanc")
            store = Store(f"sqlite:///{home / 'serve.sqlite'}")
            # the SEG/SR arriving made the study change: the hook fires again; that job reuses the result
            jobs = _wait(lambda: (js := store.jobs()) and len(js) == 2 and all(j.status == "done" for j in js)
                         and js, 120, "the repeated trigger to finish")
            first, second = jobs
            assert first.source == "dicomweb" and first.submitted_by == "pacs-bridge"
            assert second.summary["same_result_as"] == first.id
            assert modalities() == ["CT", "CT", "SEG", "SR"]
            by_mod = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in client.search_for_series(study_uid)}
            seg = client.retrieve_series(study_uid, by_mod["SEG"])
            assert len(seg) == 1 and seg[0].SOPInstanceUID == first.summary["seg_sop_uid"]
            volume = next(d for d in source if "LOCALIZER" not in d.ImageType).SeriesInstanceUID
            assert seg[0].ReferencedSeriesSequence[0].SeriesInstanceUID == volume
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(20)
