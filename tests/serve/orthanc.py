"""Start a real Orthanc PACS (Debian's package, with its DICOMweb plugin) on loopback for one test."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx

from .conftest import require_tool

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """``with Orthanc(tmp) as pacs: pacs.dicomweb`` — a fresh, empty PACS in a temporary folder."""

    def __init__(self, folder: Path, **extra: object) -> None:
        self.folder, self.extra = folder, extra
        self.http_port, self.dicom_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Orthanc":
        exe = require_tool("Orthanc", "/usr/sbin/Orthanc")
        require_tool("orthanc-dicomweb plugin", PLUGIN)
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {"Name": "medsight-test", "StorageDirectory": str(self.folder / "db"),
                  "IndexDirectory": str(self.folder / "db"), "HttpPort": self.http_port,
                  "DicomPort": self.dicom_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                  "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                  "StableAge": 2, "HttpTimeout": 60, **self.extra}
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(self.folder / "orthanc.log", "w")
        self.proc = subprocess.Popen([exe, str(self.folder / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"Orthanc did not start; see {self.folder / 'orthanc.log'}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
