"""Orthanc triggers medsight with no manual call, and OHIF shows the result: a study sent to a real Orthanc becomes
stable, the Lua hook written by `medsight users orthanc-hook` queues it, a real `medsight serve` pulls it, SEG + SR
appear in Orthanc, once (the hook fires again when they arrive; that repeat stores nothing new); then a reader signs
in to the worklist in headless Chromium, follows the study's "open in OHIF" link and the real OHIF viewer (npm
@ohif/app, served by medsight, reading Orthanc through it) draws medsight's SEG over the CT series.

Set MEDSIGHT_SCREENSHOTS=docs to refresh docs/service-ohif.png from this run.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from medsight.cli.main import main
from medsight.serve.auth import add_user
from medsight.serve.store import Store
from medsight.serve.viewer import OHIF_VERSION

from .browser import Chromium
from .conftest import require_tool
from .orthanc import Orthanc
from .test_jobs import _free_port, _up, _wait

pytestmark = pytest.mark.slow


def ohif_dir() -> Path | None:
    """The built OHIF viewer (.ci/run unpacks npm's @ohif/app there); None when absent (a failure under CI)."""
    folder = Path(os.environ.get("MEDSIGHT_OHIF_DIR")
                  or Path.home() / ".cache" / "medsight" / f"ohif-{OHIF_VERSION}")
    if (folder / "index.html").is_file():
        return folder
    if os.environ.get("CI"):
        pytest.fail(f"no built OHIF viewer in {folder}: .ci/run unpacks `npm pack @ohif/app@{OHIF_VERSION}` there")
    return None


@pytest.fixture(scope="module")
def pacs_round_trip(tmp_path_factory, seg_package, study_with_localizer):
    """Orthanc with the Lua hook + `medsight serve` (with OHIF when there is one); the study sent to Orthanc and
    its SEG/SR back in it. Yields what the tests check."""
    tmp = tmp_path_factory.mktemp("orthanc_trigger")
    home, port = tmp / "home", _free_port()
    hook = tmp / "medsight.lua"
    main(["users", "orthanc-hook", "pacs-bridge", "--service", f"http://127.0.0.1:{port}", "--out", str(hook),
          "--home", str(home)])
    viewer = ohif_dir()
    with Orthanc(tmp / "orthanc", LuaScripts=[str(hook)]) as pacs:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDSIGHT_AUDIT_URL": f"sqlite:///{tmp / 'audit.sqlite'}"}
        server = subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "serve", "--home", str(home), "--port",
                                   str(port), "--model", str(seg_package), "--workers", "1", "--no-tta",
                                   "--dicomweb", pacs.dicomweb, *(["--ohif", str(viewer)] if viewer else [])],
                                  env=env, start_new_session=True)
        try:
            _wait(lambda: _up(f"http://127.0.0.1:{port}"), 120, "the service")
            client = DICOMwebClient(url=pacs.dicomweb)
            source = [pydicom.dcmread(p) for p in sorted(study_with_localizer.glob("*.dcm"))]
            client.store_instances(source)  # the only call: a modality sending its study to the PACS
            study_uid = source[0].StudyInstanceUID

            def modalities():
                return sorted(s["00080060"]["Value"][0] for s in client.search_for_series(study_uid))

            assert _wait(lambda: modalities() == ["CT", "CT", "SEG", "SR"], 300, "SEG and SR in Orthanc")
            yield {"home": home, "hook": hook, "client": client, "source": source, "study_uid": study_uid,
                   "modalities": modalities, "url": f"http://127.0.0.1:{port}", "tmp": tmp, "viewer": viewer}
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(20)


def test_a_study_sent_to_orthanc_comes_back_with_seg_and_sr(pacs_round_trip):
    rt = pacs_round_trip
    assert stat.S_IMODE(rt["hook"].stat().st_mode) == 0o600 and "OnStableStudy" in rt["hook"].read_text()
    store = Store(f"sqlite:///{rt['home'] / 'serve.sqlite'}")
    assert store.user("pacs-bridge")["role"] == "submitter"
    # the SEG/SR arriving made the study change: the hook fires again; that job reuses the result
    jobs = _wait(lambda: (js := store.jobs()) and len(js) == 2 and all(j.status == "done" for j in js)
                 and js, 120, "the repeated trigger to finish")
    first, second = jobs
    assert first.source == "dicomweb" and first.submitted_by == "pacs-bridge"
    assert second.summary["same_result_as"] == first.id
    assert rt["modalities"]() == ["CT", "CT", "SEG", "SR"]
    client, study_uid = rt["client"], rt["study_uid"]
    by_mod = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in client.search_for_series(study_uid)}
    seg = client.retrieve_series(study_uid, by_mod["SEG"])
    assert len(seg) == 1 and seg[0].SOPInstanceUID == first.summary["seg_sop_uid"]
    assert seg[0].SeriesInstanceUID == first.summary["seg_series_uid"]
    volume = next(d for d in rt["source"] if "LOCALIZER" not in d.ImageType).SeriesInstanceUID
    assert seg[0].ReferencedSeriesSequence[0].SeriesInstanceUID == volume


_OHIF_STATE = """(() => { const s = window.services; if (!s) return null;
  const grid = s.viewportGridService.getState().viewports;
  const ids = [...grid.keys()];
  return JSON.stringify({
    shown: ids.map(id => (grid.get(id).displaySetInstanceUIDs || []).map(
      u => { const d = s.displaySetService.getDisplaySetByUID(u); return d && [d.Modality, d.SeriesInstanceUID]; })),
    overlays: ids.map(id => s.segmentationService.getSegmentationRepresentations(id).map(r => r.segmentationId)),
    segmentations: s.segmentationService.getSegmentations().map(g => ({
      id: g.segmentationId, segments: Object.keys(g.segments || {}).length,
      series: (s.displaySetService.getDisplaySetByUID(g.segmentationId) || {}).SeriesInstanceUID})),
  }); })()"""


_OHIF_SR = """(async () => { const s = window.services; if (!s) return '';
  const sr = s.displaySetService.getActiveDisplaySets().find(d => d.Modality === 'SR'); if (!sr) return '';
  let error = null; const preloaded = !!sr.isLoaded;
  try { if (!sr.isLoaded) await sr.load(); } catch (e) { error = String(e); }
  return JSON.stringify({error, preloaded, rehydratable: !!sr.isRehydratable,
    measurements: (sr.measurements || []).map(m => ({
    id: m.TrackingIdentifier, uid: m.TrackingUniqueIdentifier, type: m.graphicType || null, onImage: !!m.loaded,
    sop: m.ReferencedSOPInstanceUID || null, labels: (m.labels || []).map(l => l.label)}))}); })()"""


def _planar_lesions(sr) -> dict[str, tuple[str, str]]:
    """Tracking identifier -> (tracking UID, referenced image) of each planar (Image Region) group of the SR."""
    imaging = next(it for it in sr.ContentSequence
                   if it.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements")
    out = {}
    for group in imaging.ContentSequence:
        items = {it.ConceptNameCodeSequence[0].CodeValue: it for it in group.ContentSequence}
        if "111030" in items:
            ref = items["111030"].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            out[items["112039"].TextValue] = (items["112040"].UID, ref)
    return out


def test_ohif_opened_from_the_worklist_draws_the_seg_over_its_series(pacs_round_trip):
    """Sign in, follow the worklist's link; OHIF (real, npm build) shows the CT volume with medsight's SEG as an
    overlay of as many segments as the SEG has, read from Orthanc through the service's DICOMweb proxy."""
    rt = pacs_round_trip
    require_tool("chromium")
    if rt["viewer"] is None:
        pytest.skip(f"no built OHIF viewer (npm pack @ohif/app@{OHIF_VERSION}; see .ci/run)")
    import httpx

    store = Store(f"sqlite:///{rt['home'] / 'serve.sqlite'}")
    token = add_user(store, "dr-ohif", "reader")
    done = _wait(lambda: [j for j in store.jobs() if j.status == "done"], 120, "a finished job")[0]
    seg = pydicom.dcmread(Path(rt["home"]) / "results" / done.id / "seg.dcm")
    volume = next(d for d in rt["source"] if "LOCALIZER" not in d.ImageType).SeriesInstanceUID
    # the viewer's files and its PACS proxy are for signed-in readers only; the proxy reaches the configured PACS
    assert httpx.get(f"{rt['url']}/dicom-web/studies", timeout=30).status_code == 401
    assert httpx.get(f"{rt['url']}/viewer", timeout=30, follow_redirects=False).status_code == 303
    browser = Chromium(rt["tmp"] / "chromium", webgl=True)
    try:
        browser.open(f"{rt['url']}/login")
        browser.wait_for("document.readyState == 'complete' && !!document.querySelector('#token')")
        browser.js(f"document.querySelector('#token').value = {json.dumps(token)}; "
                   "document.querySelector('form.login').submit(); 1")
        browser.wait_for("location.pathname == '/worklist' && document.readyState == 'complete'")
        link = browser.wait_for("(document.querySelector('tr[data-job] a.ohif') || {}).href || ''")
        assert f"StudyInstanceUIDs={rt['study_uid']}" in link and str(seg.SeriesInstanceUID) in link
        browser.call("Page.navigate", url=link)
        state = json.loads(browser.wait_for(
            f"(s => s && JSON.parse(s).overlays.flat().length ? s : '')({_OHIF_STATE})", timeout_s=240))
        assert state["shown"] == [[["CT", volume]]]  # the volume (not the localizer) in the viewport...
        assert state["segmentations"] == [{"id": state["overlays"][0][0], "segments": len(seg.SegmentSequence),
                                           "series": str(seg.SeriesInstanceUID)}]  # ...with medsight's SEG over it
        # the SR: OHIF reads each lesion as a planar measurement (its outline) placed on the CT image it names
        sr = pydicom.dcmread(Path(rt["home"]) / "results" / done.id / "sr.dcm")
        planar = _planar_lesions(sr)
        assert planar and {ref for _, ref in planar.values()} <= {d.SOPInstanceUID for d in rt["source"]
                                                                  if d.SeriesInstanceUID == volume}
        read = json.loads(browser.wait_for(_OHIF_SR, timeout_s=60))
        lesions = {m["id"]: m for m in read["measurements"] if m["type"] == "POLYLINE"}
        assert {k: (m["uid"], m["sop"]) for k, m in lesions.items()} == planar, read["error"]
        assert all(m["onImage"] and "Diameter" in m["labels"] and "Volume" in m["labels"] for m in lesions.values())
        print("OHIF SR:", len(lesions), "planar lesions;", {k: read[k] for k in ("preloaded", "rehydratable", "error")})
        import time

        time.sleep(3)  # let the overlay finish drawing before the picture
        shot = browser.screenshot(rt["tmp"] / "service-ohif.png")
        assert shot.stat().st_size > 20_000
        if os.environ.get("MEDSIGHT_SCREENSHOTS"):
            import shutil

            shutil.copy(shot, Path(os.environ["MEDSIGHT_SCREENSHOTS"]) / "service-ohif.png")
    finally:
        browser.close()
