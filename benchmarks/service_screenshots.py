"""Screenshots of the triage service for docs/: the sign-in page and a worklist of real jobs.

Starts `medsight serve` on 127.0.0.1 with a small toy segmentation package, submits CT studies built from
pydicom's real CT_small.dcm, waits for the workers, signs in with headless Chromium (DevTools over a pipe) and
saves docs/service-login.png and docs/service-worklist.png.

    python benchmarks/service_screenshots.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_service import _port, _series, _toy_package, wait_up  # noqa: E402


def main() -> None:
    import httpx
    from pydicom.data import data_manager

    from tests.serve.browser import Chromium

    work = Path(tempfile.mkdtemp(prefix="medsight-shots-"))
    env = {**os.environ, "MEDSIGHT_AUDIT_URL": f"sqlite:///{work / 'audit.sqlite'}", "OMP_NUM_THREADS": "1"}
    server = None
    try:
        package = _toy_package(work / "model")
        src = Path(data_manager.DATA_ROOT) / "test_files" / "CT_small.dcm"
        studies = [_series(src, work / "studies" / f"s{i}", n, f"shot-{i}") for i, n in enumerate((4, 6, 8, 10, 12))]
        home, port = work / "home", _port()
        home.mkdir()
        token = subprocess.run([sys.executable, "-m", "medsight.cli.main", "users", "add", "dr-reader", "--role",
                                "admin", "--home", str(home)], capture_output=True, text=True, check=True,
                               env=env).stdout.strip()
        server = subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "serve", "--home", str(home), "--port",
                                   str(port), "--model", str(package), "--workers", "2"], env=env,
                                  start_new_session=True)
        url, h = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
        wait_up(url)
        for s in studies:
            files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(s.iterdir())]
            httpx.post(f"{url}/api/v1/studies", files=files, headers=h, timeout=120).raise_for_status()
        for _ in range(3600):
            rows = httpx.get(f"{url}/api/v1/worklist", headers=h, timeout=60).json()
            if all(r["status"] in ("done", "failed", "unsupported") for r in rows):
                break
            time.sleep(1)
        browser = Chromium(work / "profile")
        try:
            browser.open(f"{url}/login")
            browser.call("Emulation.setDeviceMetricsOverride", width=1366, height=768, deviceScaleFactor=1,
                         mobile=False)  # a common hospital workstation screen
            browser.wait_for("document.getElementById('token') !== null")
            browser.screenshot(ROOT / "docs" / "service-login.png")
            browser.js(f"document.getElementById('token').value = {json.dumps(token)}; document.forms[0].submit()")
            n = sum(1 for r in rows if r["thumbnail"])
            browser.wait_for(f"location.pathname === '/worklist' && document.images.length === {n} && "
                             "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout_s=120)
            browser.screenshot(ROOT / "docs" / "service-worklist.png")
        finally:
            browser.close()
        print(json.dumps(rows, indent=1)[:2000])
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
