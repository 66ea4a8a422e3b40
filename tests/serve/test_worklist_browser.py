"""The worklist in a real browser: sign in through the login page, see the rows in priority order with images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.serve.auth import add_user
from medsight.serve.store import Store

from .browser import Chromium
from .test_jobs import _free_port, _up

pytestmark = pytest.mark.slow

ROWS = [  # (summary, expected rank): referred or positive first, by calibrated probability; then the rest
    ({"finding": "no lesion", "probability": 0.05, "positive": False, "referred": False}, 5),
    ({"finding": "2 lesion(s)", "probability": 0.91, "positive": True, "referred": False, "size": "3.2 ml, 24 mm"}, 1),
    ({"finding": "1 lesion(s)", "probability": 0.40, "positive": True, "referred": True,
      "referral_reason": "1 finding(s) with mean entropy > 0.4 nats; " + "low confidence, high uncertainty; " * 8}, 3),
    ({"finding": "1 lesion(s)", "probability": 0.62, "positive": True, "referred": False}, 2),
    ({"finding": "no lesion", "probability": 0.30, "positive": False, "referred": True,
      "referral_reason": "input outside the training distribution"}, 4),
]


def test_reader_signs_in_and_sees_the_ordered_worklist(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    store = Store(f"sqlite:///{home / 'serve.sqlite'}")
    token = add_user(store, "dr-reader", "reader")
    ids = []
    for i, (summary, _) in enumerate(ROWS):
        jid = store.add_job(model="toy-seg@1", study_uid=f"1.2.3.{i}", source="upload", submitted_by="ward")
        store.claim("w", 60)
        res = home / "results" / jid
        res.mkdir(parents=True)
        PILImage.fromarray((np.eye(64) * 255).astype(np.uint8)).save(res / "thumbnail.png")
        assert store.complete(jid, "w", {**summary, "files": ["thumbnail.png"]})
        store.set_study(jid, {"patient_name": f"Doe Jane{i}", "patient_id": f"MRN{i:04d}", "accession": f"ACC{i}",
                              "study_date": "20261206", "modalities": "CT", "description": "CT head w/o contrast"})
        ids.append(jid)
    problems = []
    for i, (status, error) in enumerate((
            ("failed", "RunError: cannot read /srv/medsight/home/inputs/abc/0001.dcm: truncated pixel data (expected "
                       "524288 bytes, found 1200); compare with /srv/medsight/home/inputs/abc/0002.dcm"),
            ("unsupported", "no served model reads this study. It holds: CR 'chest PA' (1 slice(s)). Model rules: "
                            "toy-seg@1: CR 'chest PA' (1 slice(s)): 1 slice(s), the model needs a volume"))):
        jid = store.add_job(model="auto", study_uid=f"1.2.4.{i}", source="upload", submitted_by="ward")
        store.claim("w", 60)
        assert store.fail(jid, "w", error, status=status)
        store.set_study(jid, {"patient_name": "Roe Rick", "patient_id": f"MRN9{i}", "study_date": "20261205",
                              "modalities": "CR"})
        problems.append(jid)
    expected = [ids[i] for i in np.argsort([rank for _, rank in ROWS])]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "serve", "--home", str(home), "--port",
                               str(port), "--workers", "1"],
                              env={**os.environ, "MEDSIGHT_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.sqlite'}",
                                   "MEDSIGHT_HOME": str(tmp_path / "registry-home")}, start_new_session=True)
    browser = None
    try:
        t0 = time.time()
        while not _up(f"http://127.0.0.1:{port}") and time.time() - t0 < 120:
            time.sleep(0.2)
        browser = Chromium(tmp_path / "profile")
        browser.open(f"http://127.0.0.1:{port}/worklist")
        browser.call("Emulation.setDeviceMetricsOverride", width=1366, height=900, deviceScaleFactor=1, mobile=False)
        browser.wait_for("location.pathname === '/login' && document.getElementById('token') !== null")
        browser.screenshot(tmp_path / "login.png")
        browser.js(f"document.getElementById('token').value = {json.dumps(token)}; document.forms[0].submit()")
        browser.wait_for("location.pathname === '/worklist' && document.querySelectorAll('#worklist tbody tr')"
                         ".length === 5")
        order = browser.js("[...document.querySelectorAll('#worklist tbody tr')].map(r => r.dataset.job)")
        assert order == expected
        browser.wait_for("[...document.images].length === 5 && [...document.images].every(i => i.complete && "
                         "i.naturalWidth === 64)")
        third = browser.js("document.querySelectorAll('#worklist tbody tr')[2].innerText")
        assert "refer" in third and "entropy" in third
        assert "Doe Jane2" in third and "MRN0002" in third and "ACC2" in third and "2026-12-06" in third
        assert "CT head w/o contrast" in third
        # failed and unsupported studies: their own section, plain words, no server path
        assert browser.js("[...document.querySelectorAll('#not-analysed tbody tr')].map(r => r.dataset.job)") \
            == problems
        why = browser.js("[...document.querySelectorAll('#not-analysed tbody tr')].map(r => r.cells[5].innerText)")
        assert why[0].startswith("The model could not analyse this study: cannot read (a file on the server)")
        assert why[1] == ("No served model reads this study. The study holds: CR 'chest PA' (1 slice(s)). Why not: "
                          "1 slice(s), the model needs a volume.")
        assert not any("/srv" in w or "RunError" in w for w in why)
        # everything fits a 1366-px screen: no horizontal scrolling, the Evidence column inside it
        assert browser.js("document.documentElement.scrollWidth") <= 1366
        right = browser.js("Math.max(...[...document.querySelectorAll('#worklist th')].map(e => "
                           "e.getBoundingClientRect().right))")
        assert right <= 1366
        assert browser.js("document.cookie") == ""  # the session cookie is HttpOnly: no script can read it
        browser.screenshot(tmp_path / "worklist.png")
    finally:
        if browser is not None:
            browser.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
    assert (tmp_path / "worklist.png").stat().st_size > 5000
