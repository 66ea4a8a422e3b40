"""A throwaway PostgreSQL server for the audit tests: initdb + pg_ctl on a temp dir and a free loopback port.

Skipped, with the reason, when Debian's postgresql binaries are absent (failed instead when $CI is set). As root the server runs as the
``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url(require_service):
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        require_service("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql "
                    "(.ci/run does this) to run the PostgreSQL audit tests")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require_service("psycopg is not installed (pip install -e '.[test]')")
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="medsight-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            require_service("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else None
        if prefix is None:
            require_service("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    data, port = base / "data", _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    init = subprocess.run(prefix + [initdb, "-D", str(data), "-A", "trust", "-U", "medsight", "-N", "-E", "UTF8"],
                          capture_output=True, text=True, env=env)
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        require_service(f"initdb failed: {init.stderr.strip()[:300]}")
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    start = subprocess.run(prefix + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "-t", "60",
                                     "start"], capture_output=True, text=True, env=env)
    if start.returncode != 0:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        require_service(f"pg_ctl start failed: {start.stderr.strip()[:200]} {log[-300:]}")
    try:
        yield f"postgresql+psycopg://medsight@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(base, ignore_errors=True)
