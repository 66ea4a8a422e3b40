"""The job store under several writing processes (SQLite): no 'database is locked', every job claimed once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

from medsight.serve.store import Store


def _hammer(url: str, i: int, n: int) -> None:
    store = Store(url)
    for k in range(n):
        store.add_job(model="m@1", study_uid=f"1.2.{i}.{k}", source="upload", submitted_by="x")
        job = store.claim(f"w{i}", 60)
        if job is not None:
            assert store.complete(job.id, f"w{i}", {"k": k})


def test_concurrent_claims_do_not_lock_and_finish_each_job_once(tmp_path):
    # Before BEGIN IMMEDIATE, 5 of 6 such processes died in claim() with "database is locked" (read, then write:
    # SQLite refuses the upgrade at once, without waiting for its busy timeout).
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    Store(url)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(url, i, 20)) for i in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0] * 5
    jobs = Store(url).jobs()
    assert len(jobs) == 100
    claimed = [j for j in jobs if j.status != "queued"]
    assert all(j.status == "done" and j.attempts == 1 for j in claimed)
    assert Store(url).counts() == {"queued": 100 - len(claimed), "running": 0, "finishing": 0, "done": len(claimed),
                                   "failed": 0, "unsupported": 0}


def test_an_older_store_gains_the_new_columns_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, status VARCHAR(16) NOT NULL, model VARCHAR(256) "
                "NOT NULL, study_uid VARCHAR(64) NOT NULL, source VARCHAR(16) NOT NULL, dicomweb_url TEXT, push "
                "BOOLEAN NOT NULL, submitted_by VARCHAR(64) NOT NULL, submitted_at FLOAT NOT NULL, attempts INTEGER "
                "NOT NULL, worker VARCHAR(64), lease_until FLOAT, finished_at FLOAT, error TEXT, summary_json TEXT)")
    con.execute("INSERT INTO jobs VALUES ('a', 'queued', 'm@1', '1.2', 'upload', NULL, 0, 'x', 1.0, 0, NULL, NULL, "
                "NULL, NULL, NULL)")
    con.commit()
    con.close()
    store = Store(f"sqlite:///{path}")
    job = store.claim("w", 60)
    assert job.id == "a" and job.result_key is None
    assert store.complete("a", "w", {}, result_key="k" * 64)
    assert store.done_with_key("k" * 64).id == "a"


def test_a_dead_worker_s_jobs_go_back_to_the_queue(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    a = store.add_job(model="m@1", study_uid="1", source="upload", submitted_by="x")
    b = store.add_job(model="m@1", study_uid="2", source="upload", submitted_by="x")
    assert store.claim("dead", 600).id == a and store.claim("alive", 600).id == b
    assert store.release_worker("dead") == 1
    assert (store.job(a).status, store.job(a).lease_until, store.job(b).status) == ("queued", None, "running")
    assert store.claim("alive-2", 600).id == a


def test_a_finishing_job_is_taken_over_only_after_the_grace_or_its_worker_s_death(tmp_path, monkeypatch):
    import medsight.serve.store as store_mod

    clock = [1000.0]
    monkeypatch.setattr(store_mod.time, "time", lambda: clock[0])
    store = Store(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    jid = store.add_job(model="m@1", study_uid="1", source="upload", submitted_by="x")
    assert store.claim("w1", 10).id == jid and store.begin_finish(jid, "w1", 10)
    assert not store.begin_finish(jid, "w2", 10)  # only the claim holder moves it
    clock[0] += 10 + 10 * store_mod.FINISH_GRACE_LEASES - 1  # lease out, grace (10 leases) not yet
    assert store.claim("w2", 10) is None
    clock[0] += 2
    got = store.claim("w2", 10)  # w1 vanished unseen (another machine): taken over after the grace
    assert (got.id, got.worker, got.attempts) == (jid, "w2", 2)
    assert not store.complete(jid, "w1", {}) and store.complete(jid, "w2", {})
    kid = store.add_job(model="m@1", study_uid="2", source="upload", submitted_by="x")
    assert store.claim("w3", 10).id == kid and store.begin_finish(kid, "w3", 10)
    assert store.release_worker("w3") == 1 and store.job(kid).status == "queued"  # seen dead: back at once
