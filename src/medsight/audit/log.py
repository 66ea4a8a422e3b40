"""Append-only, hash-chained audit log over SQLAlchemy (SQLite file by default, PostgreSQL by URL).

Each record stores ``hash = SHA-256(canonical JSON of seq, ts, event, actor, details, prev_hash)`` where
``prev_hash`` is the previous record's hash (64 zeros for the first). Editing a record breaks its own hash,
deleting or reordering breaks the next record's ``prev_hash`` or the sequence numbering, and a ``head`` row
(updated in the same transaction as every append) catches removal of the last records. Whoever can rewrite the
whole table can forge a new chain: anchor the head hash elsewhere (``AuditLog.head()``) when that matters.

Appends from many processes are serialised by the database itself: ``BEGIN IMMEDIATE`` on SQLite (one writer
at a time, others wait up to ``busy_timeout``) and a transaction-scoped advisory lock on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (Column, Integer, MetaData, String, Table, Text, create_engine, event, select, text,
                        update)
from sqlalchemy.engine import Engine

from medsight.errors import ConfigError

GENESIS = "0" * 64
_ADVISORY_KEY = 0x6D656473  # "meds": the PostgreSQL advisory lock id serialising appends

metadata = MetaData()
events_table = Table(
    "audit_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("event", String(200), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
head_table = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


@dataclass(frozen=True)
class AuditRecord:
    """One event as stored; ``details`` is a JSON-compatible dict."""

    seq: int
    ts: str
    event: str
    actor: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``AuditLog.verify``: ``bad_seq`` names the first record that fails, ``reason`` says how."""

    ok: bool
    n_records: int
    bad_seq: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def canonical_details(details: dict[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(seq: int, ts: str, event_name: str, actor: str, details_json: str, prev_hash: str) -> str:
    """The chain hash of one record (details already in canonical JSON)."""
    payload = json.dumps([seq, ts, event_name, actor, details_json, prev_hash], separators=(",", ":"),
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def default_url() -> str:
    """$MEDSIGHT_AUDIT_URL, else a SQLite file in $MEDSIGHT_HOME (default ~/.medsight)/audit.db."""
    url = os.environ.get("MEDSIGHT_AUDIT_URL")
    if url:
        return url
    home = Path(os.environ.get("MEDSIGHT_HOME") or Path.home() / ".medsight")
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'audit.db'}"


def _normalise_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use psycopg 3 (the driver our test extra installs)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if "://" not in url:  # a bare path means a SQLite file
        url = f"sqlite:///{Path(url).resolve()}"
    return url


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    """In a forked child, drop (without closing) the parent's pooled connections: a SQLite or libpq handle
    used across fork corrupts locks ("disk I/O error") or the server protocol."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)


def _make_engine(url: str) -> Engine:
    engine = _create_engine(url)
    _ENGINES.add(engine)
    return engine


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 120})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):  # let us issue BEGIN ourselves (pysqlite's own BEGIN is deferred)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 120000")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # appends take the write lock at BEGIN (IMMEDIATE): they never interleave or deadlock
            conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get("sqlite_begin", "DEFERRED"))

        return engine
    return create_engine(url, pool_pre_ping=True)


def _refuse_non_sqlite(path: Path, shown: str) -> None:
    """A file that exists but is not a SQLite database is refused before anything (a lock file) is written
    beside it: it is a user's mistake (a wrong path), not a log to initialise."""
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                raise ConfigError(f"{shown} is not an audit log (not a SQLite database); check --audit / "
                                  "MEDSIGHT_AUDIT_URL")


class AuditLog:
    """The audit log at ``url`` (SQLAlchemy URL or a file path; None -> ``default_url()``)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = _normalise_url(url or default_url())
        try:
            self.engine = _make_engine(self.url)
        except Exception as err:
            if "No module named" in str(err) or isinstance(err, ImportError):
                raise ConfigError(f"audit log URL {self._safe_url()}: database driver missing ({err})") from err
            raise ConfigError(f"cannot open the audit log at {self._safe_url()}: {err}") from err
        self._is_pg = self.engine.dialect.name == "postgresql"
        database = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        # SQLite's busy handler polls with sleeps of up to 100 ms; a blocking file lock beside the database wakes
        # the next writer the moment the previous one commits (BEGIN IMMEDIATE still guards other clients)
        self._lock_path = f"{database}.lock" if database and database != ":memory:" else None
        if database and database != ":memory:":
            _refuse_non_sqlite(Path(database), self._safe_url())
        # First use creates the file, switches it to WAL and creates the tables: several processes doing that at
        # the same instant got "database is locked" (SQLite does not wait on a lock upgrade inside CREATE TABLE),
        # so creation is serialised by the same file lock as appends.
        try:
            with self._writer_lock():
                metadata.create_all(self.engine, checkfirst=True)
        except Exception as err:
            if "No module named" in str(err) or isinstance(err, ImportError):
                raise ConfigError(f"audit log URL {self._safe_url()}: database driver missing ({err})") from err
            if isinstance(err, ConfigError):
                raise
            try:  # another client (not using the file lock, e.g. PostgreSQL) raced on CREATE TABLE
                metadata.create_all(self.engine, checkfirst=True)
            except Exception as err2:
                raise ConfigError(f"cannot open the audit log at {self._safe_url()}: {err2}") from err2

    def _safe_url(self) -> str:
        try:
            from sqlalchemy.engine import make_url

            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<url>"

    def __repr__(self) -> str:
        return f"AuditLog({self._safe_url()})"

    def append(self, event_name: str, actor: str, **details: Any) -> AuditRecord:
        """Append one event atomically, chained to the current head; safe from many processes at once."""
        if not event_name or not actor:
            raise ConfigError("an audit event needs a non-empty event name and actor")
        details_json = canonical_details(details)
        with self._writer_lock(), self.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, \
                conn.begin():
            if self._is_pg:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
            last = conn.execute(select(events_table.c.seq, events_table.c.hash)
                                .order_by(events_table.c.seq.desc()).limit(1)).first()
            seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
            ts = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
            digest = record_hash(seq, ts, event_name, actor, details_json, prev)
            conn.execute(events_table.insert().values(seq=seq, ts=ts, event=event_name, actor=actor,
                                                      details=details_json, prev_hash=prev, hash=digest))
            updated = conn.execute(update(head_table).where(head_table.c.id == 1).values(seq=seq, hash=digest))
            if updated.rowcount == 0:
                conn.execute(head_table.insert().values(id=1, seq=seq, hash=digest))
        return AuditRecord(seq, ts, event_name, actor, json.loads(details_json), prev, digest)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def records(self, since: int = 0, limit: int | None = None, event_name: str | None = None
                ) -> Iterator[AuditRecord]:
        """Records in sequence order (optionally from ``since``, of one event type, at most ``limit``)."""
        q = select(events_table).where(events_table.c.seq > since).order_by(events_table.c.seq)
        if event_name:
            q = q.where(events_table.c.event == event_name)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                yield AuditRecord(r.seq, r.ts, r.event, r.actor, _loads(r.details), r.prev_hash, r.hash)

    def head(self) -> tuple[int, str]:
        """(last seq, last hash): publish or store it elsewhere to anchor the chain."""
        with self.engine.connect() as conn:
            row = conn.execute(select(head_table.c.seq, head_table.c.hash).where(head_table.c.id == 1)).first()
        return (row.seq, row.hash) if row else (0, GENESIS)

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(events_table.c.seq).order_by(events_table.c.seq.desc()).limit(1))
                       .scalar() or 0)

    def verify(self) -> VerifyResult:
        """Walk the chain from the first record; name the first record that was edited, removed or moved."""
        prev, expected_seq, n = GENESIS, 1, 0
        with self.engine.connect() as conn:
            rows = conn.execute(select(events_table).order_by(events_table.c.seq))
            for r in rows:
                n += 1
                if r.seq != expected_seq:
                    return VerifyResult(False, n, expected_seq,
                                        f"record {expected_seq} is missing (next present is {r.seq})")
                if r.prev_hash != prev:
                    return VerifyResult(False, n, r.seq, f"record {r.seq} does not follow record {r.seq - 1} "
                                                         "(deleted, inserted or reordered records)")
                if record_hash(r.seq, r.ts, r.event, r.actor, r.details, r.prev_hash) != r.hash:
                    return VerifyResult(False, n, r.seq, f"record {r.seq} ({r.event} by {r.actor}) was altered: "
                                                         "its content no longer matches its hash")
                prev, expected_seq = r.hash, expected_seq + 1
            head = conn.execute(select(head_table.c.seq, head_table.c.hash).where(head_table.c.id == 1)).first()
        last_seq = expected_seq - 1
        if head is None and n:
            return VerifyResult(False, n, last_seq, "the head record is missing")
        if head is not None and (head.seq, head.hash) != (last_seq, prev):
            return VerifyResult(False, n, last_seq + 1 if head.seq > last_seq else head.seq,
                                f"the log ends at record {last_seq} but its head says {head.seq}: "
                                "records were removed from the end or the head was edited")
        return VerifyResult(True, n)


def _loads(text_value: str) -> dict[str, Any]:
    try:
        value = json.loads(text_value)
    except json.JSONDecodeError:
        return {"_unparseable": text_value}
    return value if isinstance(value, dict) else {"_value": value}


_DEFAULT: dict[str, AuditLog] = {}


def default_audit_log() -> AuditLog:
    """The process-wide log at ``default_url()`` (one engine per URL and process)."""
    url = _normalise_url(default_url())
    key = f"{os.getpid()}:{url}"
    if key not in _DEFAULT:
        _DEFAULT[key] = AuditLog(url)
    return _DEFAULT[key]
