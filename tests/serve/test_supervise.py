"""Supervised workers with a real `medsight serve` process tree: killed workers are replaced (and /healthz says
503 while none runs), SIGTERM/SIGINT to the server leave no worker behind, nor does a server killed outright."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from sqlalchemy import insert

from medsight.serve.store import Store, jobs

from .test_jobs import _free_port, _serve, _up, _upload, _wait

pytestmark = pytest.mark.slow


def _gone(pid: int) -> bool:
    """True once ``pid`` is no running process (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _health(url: str) -> tuple[int, dict]:
    r = httpx.get(f"{url}/healthz", timeout=5)
    return r.status_code, r.json()


def _start(tmp_path, seg_package, workers: int):
    home, port = tmp_path / "home", _free_port()
    home.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    server = _serve(home, port, seg_package, tmp_path, workers=workers)
    _wait(lambda: _up(url) and _health(url)[1]["workers_alive"] == workers, 120, "the server and its workers")
    return server, url, home


def test_killed_workers_are_replaced_and_the_next_study_finishes(tmp_path, seg_package, ct_series):
    from medsight.serve.auth import add_user

    server, url, home = _start(tmp_path, seg_package, workers=2)
    try:
        token = add_user(Store(f"sqlite:///{home / 'serve.sqlite'}"), "ward", "admin")
        code, body = _health(url)
        assert code == 200 and body["queue"]["queued"] == 0
        old = [w["pid"] for w in body["workers"]]
        assert len(old) == 2 and all(not _gone(p) for p in old)
        store = Store(f"sqlite:///{home / 'serve.sqlite'}")
        held = "f" * 32  # a job that worker is running (written as claimed: no live worker can take it first)
        with store.engine.begin() as c:
            c.execute(insert(jobs).values(id=held, status="running", model="auto", study_uid="1.2.3", source="upload",
                                          push=False, submitted_by="ward", submitted_at=time.time(), attempts=1,
                                          worker=body["workers"][0]["name"], lease_until=time.time() + 600))
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        t0 = time.time()
        seen = _wait(lambda: (h := _health(url))[0] == 503 and h, 10, "/healthz to report no worker alive")
        assert seen[1]["workers_alive"] == 0 and seen[1]["status"] == "no worker alive"
        _wait(lambda: _health(url)[1]["workers_alive"] == 2, 30, "both workers replaced")
        assert time.time() - t0 < 30
        # the dead worker's job was put back at once, not after its 600-s lease (it then fails: no inputs)
        assert _wait(lambda: store.job(held).status == "failed", 60, "the held job back in the queue and retried")
        assert store.job(held).attempts == 2
        body = _health(url)[1]
        assert {w["restarts"] for w in body["workers"]} == {1} and {w["last_exit_code"] for w in body["workers"]} \
            == {-signal.SIGKILL}
        new = [w["pid"] for w in body["workers"]]
        assert not set(new) & set(old) and all(_gone(p) for p in old)
        r = httpx.post(f"{url}/api/v1/studies", files=_upload(ct_series), timeout=60,
                       headers={"Authorization": f"Bearer {token}"})
        job = _wait(lambda: (j := store.job(r.json()["job_id"])) and j.status in ("done", "failed") and j, 240,
                    "the next study")
        assert job.status == "done", job.error
        assert job.worker in {w["name"] for w in _health(url)[1]["workers"]}
        server.send_signal(signal.SIGTERM)
        server.wait(15)
        _wait(lambda: all(_gone(p) for p in new), 15, "every worker to stop after SIGTERM")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_no_worker_outlives_the_server(tmp_path, seg_package, how):
    server, url, _ = _start(tmp_path, seg_package, workers=2)
    try:
        pids = [w["pid"] for w in _health(url)[1]["workers"]]
        server.send_signal(getattr(signal, how))  # the server process only, not its process group
        server.wait(15)
        _wait(lambda: all(_gone(p) for p in pids), 15, f"every worker to stop after {how} to the server")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
