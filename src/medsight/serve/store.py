"""The service's persistent state over SQLAlchemy: users (token hashes only), sessions and the job queue.

SQLite file by default, PostgreSQL by URL. Jobs are claimed with a lease: a worker that dies stops renewing it, and
once the lease has run out another worker claims the job again. A worker that has its result moves the job to
``finishing`` (``begin_finish``, only while it still holds the claim) before it records and pushes anything; a
finishing job is not taken over when a lease runs out (only when its worker is seen dead, or after a long grace),
so two attempts never both record ``job_done``. A job becomes ``done`` only through ``complete(job, worker)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (Boolean, Column, Float, Integer, MetaData, String, Table, Text, create_engine, event, insert,
                        select, update)
from sqlalchemy.engine import Engine

from medsight.errors import MedsightError

ROLES = ("submitter", "reader", "admin")
# unsupported: no served model reads the study; finishing: the result exists, its records and push are under way
STATUSES = ("queued", "running", "finishing", "done", "failed", "unsupported")
ACTIVE = ("running", "finishing")  # held by a worker
FINISH_GRACE_LEASES = 10  # a finishing job whose worker vanished unseen is taken over after this many leases

metadata = MetaData()
users = Table("users", metadata,
              Column("name", String(64), primary_key=True),
              Column("role", String(16), nullable=False),
              Column("token_sha256", String(64), nullable=False, unique=True),
              Column("created", String(32), nullable=False),
              Column("revoked", Boolean, nullable=False, default=False))
sessions = Table("sessions", metadata,
                 Column("id_sha256", String(64), primary_key=True),
                 Column("user", String(64), nullable=False),
                 Column("expires", Float, nullable=False))
jobs = Table("jobs", metadata,
             Column("id", String(32), primary_key=True),
             Column("status", String(16), nullable=False, index=True),
             Column("model", String(256), nullable=False),
             Column("study_uid", String(64), nullable=False),
             Column("source", String(16), nullable=False),  # upload | dicomweb
             Column("dicomweb_url", Text),
             Column("push", Boolean, nullable=False, default=False),
             Column("submitted_by", String(64), nullable=False),
             Column("submitted_at", Float, nullable=False),
             Column("attempts", Integer, nullable=False, default=0),
             Column("worker", String(64)),
             Column("lease_until", Float),
             Column("finished_at", Float),
             Column("error", Text),
             Column("summary_json", Text),  # the worklist row: finding, probability, referral, size, thumbnail
             Column("result_key", String(64), index=True),  # sha256(study, series, package id) of a done job
             Column("study_json", Text))  # what the worklist shows of the study: patient, accession, date...


class StoreError(MedsightError):
    """The job store could not be opened or written."""


def default_url(home: Path) -> str:
    return f"sqlite:///{Path(home) / 'serve.sqlite'}"


def open_engine(url: str) -> Engine:
    """An engine with SQLite set up for several processes (WAL, a busy timeout) or a plain PostgreSQL one."""
    try:
        engine = create_engine(url, future=True, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):  # noqa: ANN001
                dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below), not the driver
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn):  # noqa: ANN001
                # A write transaction takes the write lock at BEGIN: a deferred one that read first and then
                # writes gets SQLITE_BUSY at once when another writer committed meanwhile (the busy timeout is
                # not applied to that upgrade), which killed workers in claim() with "database is locked".
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")
        _retry_locked(lambda: metadata.create_all(engine))
        _retry_locked(lambda: _add_missing_columns(engine))
        return engine
    except Exception as e:  # a bad URL or an unreachable server is a user's configuration mistake
        raise StoreError(f"cannot open the job store at {url.split('@')[-1]}: {e.__class__.__name__}: "
                         f"{str(e).splitlines()[0][:200]}") from e


def _retry_locked(fn, tries: int = 8):  # noqa: ANN001, ANN202
    """Run ``fn`` again when SQLite still reports a locked database after its busy timeout (start-up races)."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(tries):
        try:
            return fn()
        except OperationalError as e:
            if "locked" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return None


def _add_missing_columns(engine: Engine) -> None:
    """Add columns introduced after a store was created (nullable ones only), so an upgrade keeps its jobs."""
    from sqlalchemy import inspect

    have = {c["name"] for c in inspect(engine).get_columns("jobs")}
    with engine.connect().execution_options(write=True) as c, c.begin():
        for col in jobs.columns:
            if col.name not in have:
                c.exec_driver_sql(f"ALTER TABLE jobs ADD COLUMN {col.name} {col.type.compile(engine.dialect)}")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    model: str
    study_uid: str
    source: str
    dicomweb_url: str | None
    push: bool
    submitted_by: str
    submitted_at: float
    attempts: int
    worker: str | None
    lease_until: float | None
    finished_at: float | None
    error: str | None
    summary: dict[str, Any]
    result_key: str | None = None
    study: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        """What the API shows: no worker internals."""
        return {"id": self.id, "status": self.status, "model": self.model, "study_uid": self.study_uid,
                "source": self.source, "submitted_by": self.submitted_by, "submitted_at": self.submitted_at,
                "finished_at": self.finished_at, "attempts": self.attempts, "error": self.error,
                "result": self.summary or None}


def _job(row: Any) -> Job:
    d = dict(row._mapping)
    summary = json.loads(d.pop("summary_json") or "{}")
    study = json.loads(d.pop("study_json") or "null")
    return Job(summary=summary, study=study, **d)


class Store:
    """Users, sessions and jobs in one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)
        self._writer = self.engine.execution_options(write=True)

    def _write(self):  # noqa: ANN202
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        return self._writer.begin()

    # users -------------------------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, token_sha256: str) -> None:
        if role not in ROLES:
            raise StoreError(f"unknown role '{role}'; use one of {', '.join(ROLES)}")
        with self._write() as c:
            if c.execute(select(users.c.name).where(users.c.name == name)).first():
                raise StoreError(f"user '{name}' exists; give it a new token with `medsight users rotate {name}`")
            c.execute(insert(users).values(name=name, role=role, token_sha256=token_sha256, created=_now(),
                                           revoked=False))

    def revoke_user(self, name: str) -> None:
        with self._write() as c:
            if c.execute(update(users).where(users.c.name == name).values(revoked=True)).rowcount != 1:
                raise StoreError(f"no user '{name}'")
            c.execute(sessions.delete().where(sessions.c.user == name))

    def rotate_user(self, name: str, token_sha256: str) -> None:
        """Give a user a new token (also re-activates a revoked one); the old token and its sessions end."""
        with self._write() as c:
            if c.execute(update(users).where(users.c.name == name).values(token_sha256=token_sha256, revoked=False)
                         ).rowcount != 1:
                raise StoreError(f"no user '{name}'; add it with `medsight users add {name} --role ...`")
            c.execute(sessions.delete().where(sessions.c.user == name))

    def user_by_token(self, token_sha256: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(users).where(users.c.token_sha256 == token_sha256)).first()
        return dict(row._mapping) if row else None

    def user(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(users).where(users.c.name == name)).first()
        return dict(row._mapping) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [{k: v for k, v in r._mapping.items() if k != "token_sha256"}
                    for r in c.execute(select(users).order_by(users.c.name))]

    # sessions ----------------------------------------------------------------------------------------------
    def add_session(self, id_sha256: str, user: str, ttl_s: float) -> None:
        with self._write() as c:
            c.execute(insert(sessions).values(id_sha256=id_sha256, user=user, expires=time.time() + ttl_s))

    def session_user(self, id_sha256: str) -> str | None:
        with self.engine.connect() as c:
            row = c.execute(select(sessions).where(sessions.c.id_sha256 == id_sha256)).first()
        if row is None or row.expires < time.time():
            return None
        return row.user

    def drop_session(self, id_sha256: str) -> None:
        with self._write() as c:
            c.execute(sessions.delete().where(sessions.c.id_sha256 == id_sha256))

    # jobs --------------------------------------------------------------------------------------------------
    def add_job(self, *, model: str, study_uid: str, source: str, submitted_by: str, job_id: str | None = None,
                dicomweb_url: str | None = None, push: bool = False) -> str:
        jid = job_id or uuid.uuid4().hex
        with self._write() as c:
            c.execute(insert(jobs).values(id=jid, status="queued", model=model, study_uid=study_uid, source=source,
                                          dicomweb_url=dicomweb_url, push=push, submitted_by=submitted_by,
                                          submitted_at=time.time(), attempts=0))
        return jid

    def job(self, job_id: str) -> Job | None:
        with self.engine.connect() as c:
            row = c.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return _job(row) if row else None

    def jobs(self, status: str | None = None) -> list[Job]:
        q = select(jobs).order_by(jobs.c.submitted_at)
        if status:
            q = q.where(jobs.c.status == status)
        with self.engine.connect() as c:
            return [_job(r) for r in c.execute(q)]

    def claim(self, worker: str, lease_s: float, max_attempts: int = 3) -> Job | None:
        """Take the oldest queued job, or a running one whose lease ran out (its worker died)."""
        now = time.time()
        claimable = ((jobs.c.status == "queued") | ((jobs.c.status == "running") & (jobs.c.lease_until < now))
                     | ((jobs.c.status == "finishing") & (jobs.c.lease_until < now - FINISH_GRACE_LEASES * lease_s)))
        with self._write() as c:
            for row in c.execute(select(jobs.c.id, jobs.c.attempts).where(claimable)
                                 .order_by(jobs.c.submitted_at).limit(8)):
                if row.attempts >= max_attempts:
                    c.execute(update(jobs).where((jobs.c.id == row.id) & claimable).values(
                        status="failed", finished_at=now, error=f"gave up after {row.attempts} attempts"))
                    continue
                got = c.execute(update(jobs).where((jobs.c.id == row.id) & claimable).values(
                    status="running", worker=worker, lease_until=now + lease_s, attempts=jobs.c.attempts + 1))
                if got.rowcount == 1:
                    return _job(c.execute(select(jobs).where(jobs.c.id == row.id)).first())
        return None

    def renew(self, job_id: str, worker: str, lease_s: float) -> bool:
        with self._write() as c:
            return c.execute(update(jobs).where((jobs.c.id == job_id) & (jobs.c.worker == worker)
                                                & jobs.c.status.in_(ACTIVE))
                             .values(lease_until=time.time() + lease_s)).rowcount == 1

    def begin_finish(self, job_id: str, worker: str, lease_s: float) -> bool:
        """The worker holding the claim has its result: from now on no lease expiry hands the job to another
        worker (False: another attempt owns the job; this one must record nothing)."""
        with self._write() as c:
            return c.execute(update(jobs).where((jobs.c.id == job_id) & (jobs.c.worker == worker)
                                                & (jobs.c.status == "running"))
                             .values(status="finishing", lease_until=time.time() + lease_s)).rowcount == 1

    def release(self, job_id: str, worker: str) -> bool:
        """Give a claimed job back to the queue (its audit record could not be written: retry it later)."""
        with self._write() as c:
            return c.execute(update(jobs).where((jobs.c.id == job_id) & (jobs.c.worker == worker)
                                                & jobs.c.status.in_(ACTIVE))
                             .values(status="queued", lease_until=None)).rowcount == 1

    def release_worker(self, worker: str) -> int:
        """Put back in the queue every job a worker held when it died (its supervisor saw it die), without
        waiting for the lease to run out. Returns how many."""
        with self._write() as c:
            return c.execute(update(jobs).where((jobs.c.worker == worker) & jobs.c.status.in_(ACTIVE))
                             .values(status="queued", lease_until=None)).rowcount

    def reroute(self, job_id: str, worker: str, model: str) -> bool:
        """Record the model a job now runs (a newer approved version replaced the one it was queued for)."""
        with self._write() as c:
            return c.execute(update(jobs).where((jobs.c.id == job_id) & (jobs.c.worker == worker))
                             .values(model=model)).rowcount == 1

    def set_study(self, job_id: str, study: dict[str, Any]) -> None:
        with self._write() as c:
            c.execute(update(jobs).where(jobs.c.id == job_id).values(study_json=json.dumps(study, sort_keys=True)))

    def pending_for(self, study_uid: str, model: str, source: str) -> Job | None:
        """A queued or running job for the same study, model and source (a repeated trigger joins it)."""
        with self.engine.connect() as c:
            row = c.execute(select(jobs).where((jobs.c.study_uid == study_uid) & (jobs.c.model == model)
                                               & (jobs.c.source == source)
                                               & jobs.c.status.in_(("queued", *ACTIVE))).limit(1)).first()
        return _job(row) if row else None

    def done_with_key(self, result_key: str) -> Job | None:
        """The finished job that already holds the result for (study, series, package), if any."""
        with self.engine.connect() as c:
            row = c.execute(select(jobs).where((jobs.c.result_key == result_key) & (jobs.c.status == "done"))
                            .order_by(jobs.c.finished_at).limit(1)).first()
        return _job(row) if row else None

    def counts(self) -> dict[str, int]:
        """Jobs per status (for /healthz)."""
        from sqlalchemy import func

        with self.engine.connect() as c:
            got = dict(c.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())
        return {s: int(got.get(s, 0)) for s in STATUSES}

    def complete(self, job_id: str, worker: str, summary: dict[str, Any], result_key: str | None = None) -> bool:
        """Mark done, only for the worker holding the claim; False means another attempt owns the job now."""
        with self._write() as c:
            return c.execute(update(jobs).where((jobs.c.id == job_id) & (jobs.c.worker == worker)
                                                & jobs.c.status.in_(ACTIVE))
                             .values(status="done", finished_at=time.time(), lease_until=None, result_key=result_key,
                                     summary_json=json.dumps(summary, sort_keys=True))).rowcount == 1

    def fail(self, job_id: str, worker: str, error: str, status: str = "failed") -> bool:
        with self._write() as c:
            return c.execute(update(jobs).where((jobs.c.id == job_id) & (jobs.c.worker == worker)
                                                & jobs.c.status.in_(ACTIVE))
                             .values(status=status, finished_at=time.time(), lease_until=None,
                                     error=error[:2000])).rowcount == 1
