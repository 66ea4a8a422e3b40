"""Hash chain of the audit log: the documented formula, and tampering (edit, delete, reorder, truncate) caught."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sqlite3

import pytest

from medsight.audit.log import GENESIS, AuditLog
from medsight.cli.main import main


def _fill(url: str, n: int = 10) -> AuditLog:
    log = AuditLog(url)
    for i in range(n):
        log.append("predict", f"user{i % 3}", input_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
                   model_id="abc123", i=i)
    return log


def test_chain_follows_documented_formula(tmp_path):
    log = _fill(str(tmp_path / "a.db"), 3)
    recs = list(log.records())
    assert [r.seq for r in recs] == [1, 2, 3] and recs[0].prev_hash == GENESIS
    for prev, r in zip([None, *recs], recs):
        details = json.dumps(r.details, sort_keys=True, separators=(",", ":"))
        payload = json.dumps([r.seq, r.ts, r.event, r.actor, details, prev.hash if prev else "0" * 64],
                             separators=(",", ":"))
        assert r.hash == hashlib.sha256(payload.encode()).hexdigest()
    assert log.verify().ok and log.verify().n_records == 3 and log.head() == (3, recs[-1].hash)


def _sql(path, statement, *params):
    con = sqlite3.connect(path)
    con.execute(statement, params)
    con.commit()
    con.close()


@pytest.mark.parametrize("tamper, bad_seq, words", [
    ("UPDATE audit_events SET actor='mallory' WHERE seq=4", 4, "altered"),
    ("UPDATE audit_events SET details=replace(details, '\"i\":6', '\"i\":7') WHERE seq=7", 7, "altered"),
    ("DELETE FROM audit_events WHERE seq=5", 5, "missing"),
    ("DELETE FROM audit_events WHERE seq=10", 10, "end"),
])
def test_tampering_is_detected_and_named(tmp_path, tamper, bad_seq, words):
    path = tmp_path / "a.db"
    log = _fill(str(path))
    _sql(path, tamper)
    result = log.verify()
    assert not result.ok and result.bad_seq == bad_seq and words in result.reason


def test_reordering_is_detected(tmp_path):
    path = tmp_path / "a.db"
    log = _fill(str(path))
    con = sqlite3.connect(path)  # swap records 3 and 4 but keep the numbering: a reorder
    rows = {r[0]: r[1:] for r in con.execute("SELECT seq, ts, event, actor, details, prev_hash, hash "
                                             "FROM audit_events WHERE seq IN (3, 4)")}
    for seq, other in ((3, 4), (4, 3)):
        con.execute("UPDATE audit_events SET ts=?, event=?, actor=?, details=?, prev_hash=?, hash=? WHERE seq=?",
                    (*rows[other], seq))
    con.commit()
    con.close()
    result = log.verify()
    assert not result.ok and result.bad_seq == 3 and "does not follow" in result.reason


def test_cli_verify_and_list(tmp_path, capsys):
    path = tmp_path / "a.db"
    _fill(str(path), 4)
    main(["audit", "verify", "--url", str(path)])
    assert "ok  4 records" in capsys.readouterr().out
    main(["audit", "list", "--url", str(path), "--json", "-n", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["seq"] == 2
    _sql(path, "UPDATE audit_events SET event='login' WHERE seq=2")
    with pytest.raises(SystemExit) as exc:
        main(["audit", "verify", "--url", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "record 2" in err and "Traceback" not in err


def _writer(url: str, worker: int, n: int, start) -> None:
    start.wait()
    log = AuditLog(url)
    for i in range(n):
        log.append("predict", f"proc{worker}", i=i)


# 8 processes x 250 appends: enough interleaving that a log without its writer lock fails every run (checked
# 2026-12-07 by removing the PostgreSQL advisory lock / SQLite's file lock and BEGIN IMMEDIATE), at a quarter of
# the 8 x 1000 that took 100 s of the suite's time.
N_PROC, N_EACH = 8, 250


def _hammer(url: str, n_proc: int = N_PROC, n_each: int = N_EACH) -> AuditLog:
    ctx = mp.get_context("fork")
    start = ctx.Event()
    AuditLog(url)  # create the tables once, as a deployed log would have them
    procs = [ctx.Process(target=_writer, args=(url, w, n_each, start)) for w in range(n_proc)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    return AuditLog(url)


@pytest.mark.slow
def test_concurrent_writers_sqlite(tmp_path):
    log = _hammer(str(tmp_path / "c.db"))
    result = log.verify()
    assert result.ok and result.n_records == N_PROC * N_EACH
    recs = list(log.records())
    per_proc = {f"proc{w}": sorted(r.details["i"] for r in recs if r.actor == f"proc{w}") for w in range(N_PROC)}
    assert all(v == list(range(N_EACH)) for v in per_proc.values())  # no event lost or duplicated


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_writers_postgres(postgres_url):
    log = _hammer(postgres_url)
    result = log.verify()
    assert result.ok and result.n_records == N_PROC * N_EACH
    recs = list(log.records())
    assert sorted((r.actor, r.details["i"]) for r in recs) == sorted(
        (f"proc{w}", i) for w in range(N_PROC) for i in range(N_EACH))
    # tampering on PostgreSQL is caught the same way
    from sqlalchemy import text

    with log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor='mallory' WHERE seq=1234"))
    bad = log.verify()
    assert not bad.ok and bad.bad_seq == 1234


def _first_user(url: str, worker: int, start) -> None:  # type: ignore[no-untyped-def]
    start.wait()
    AuditLog(url).append("first-use", f"proc{worker}", i=worker)


def test_first_use_race_on_a_new_sqlite_log(tmp_path):
    """Six fresh processes open one brand-new SQLite log at the same instant (as two federated sites finishing a
    round in the same second did): every one appends, none gets 'database is locked'."""
    url = str(tmp_path / "new.db")
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited connection, as separate commands would be
    start = ctx.Event()
    procs = [ctx.Process(target=_first_user, args=(url, w, start)) for w in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 6
    log = AuditLog(url)
    assert log.verify().ok and sorted(r.details["i"] for r in log.records()) == list(range(6))
