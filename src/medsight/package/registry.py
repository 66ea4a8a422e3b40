"""The model registry: which packages exist, under which name and version, and whether they may be used.

One row per registered package (SQLite file ``$MEDSIGHT_HOME/registry.db`` by default, PostgreSQL or any
SQLAlchemy URL through ``$MEDSIGHT_REGISTRY_URL`` or ``--registry``): name, version (1, 2, ... per name), package
id, task, parent id, data fingerprint, headline metrics, folder, status and times. The package folder itself
holds the truth (its manifest); the registry is the index clinics query and the place where a model's status
moves ``candidate`` -> ``approved`` -> ``retired``. Registering the same package id twice returns the existing row.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, exc, select, update
from sqlalchemy.engine import Engine

from medsight.audit.log import _normalise_url
from medsight.errors import ConfigError, InputNotFoundError

if TYPE_CHECKING:
    from medsight.package.package import Package

STATUSES = ("candidate", "approved", "retired")
_NEXT = {"candidate": ("approved", "retired"), "approved": ("retired",), "retired": ()}

metadata = MetaData()
models_table = Table(
    "models", metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("id", String(64), nullable=False, index=True),
    Column("task", String(40), nullable=False),
    Column("parent_id", String(64)),
    Column("data_fingerprint", String(200)),
    Column("metrics", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("registered_at", String(40), nullable=False),
    Column("status_changed_at", String(40), nullable=False),
)


@dataclass(frozen=True)
class ModelRecord:
    """One registered package version."""

    name: str
    version: int
    id: str
    task: str
    parent_id: str | None
    data_fingerprint: str | None
    metrics: dict[str, Any]
    path: str
    status: str
    registered_at: str
    status_changed_at: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "ref": self.ref, "id": self.id, "task": self.task,
                "parent_id": self.parent_id, "data_fingerprint": self.data_fingerprint, "metrics": self.metrics,
                "path": self.path, "status": self.status, "registered_at": self.registered_at,
                "status_changed_at": self.status_changed_at}


def medsight_home() -> Path:
    return Path(os.environ.get("MEDSIGHT_HOME") or Path.home() / ".medsight")


def default_url() -> str:
    """$MEDSIGHT_REGISTRY_URL, else the SQLite file $MEDSIGHT_HOME/registry.db."""
    return os.environ.get("MEDSIGHT_REGISTRY_URL") or f"sqlite:///{medsight_home() / 'registry.db'}"


_ENGINES: dict[str, Engine] = {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """The registry at ``url`` (None -> ``default_url()``). ``create=False`` reads without creating a file."""

    def __init__(self, url: str | None = None, create: bool = True) -> None:
        self.url = _normalise_url(url or default_url())
        self.engine: Engine | None = None
        if self.url.startswith("sqlite:///") and not create and not Path(self.url[len("sqlite:///"):]).exists():
            return  # nothing registered yet: every lookup finds nothing
        if self.url.startswith("sqlite:///"):
            Path(self.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        key = f"{os.getpid()}:{self.url}"
        try:
            if key not in _ENGINES:
                _ENGINES[key] = create_engine(self.url, **({"connect_args": {"timeout": 60}}
                                                           if self.url.startswith("sqlite") else {}))
            self.engine = _ENGINES[key]
            metadata.create_all(self.engine, checkfirst=True)
        except ImportError as err:
            raise ConfigError(f"model registry {self.url}: database driver missing ({err})") from err
        except Exception as err:
            raise ConfigError(f"cannot open the model registry at {self.url.split('@')[-1]}: {err}") from err

    def _rows(self, query) -> list[ModelRecord]:  # noqa: ANN001 - a SQLAlchemy select
        if self.engine is None:
            return []
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def register(self, pkg: Package) -> ModelRecord:
        """Add ``pkg`` as the next version of its name (status candidate); an already registered id is returned."""
        existing = [r for r in self._rows(select(models_table).where(models_table.c.id == pkg.id))
                    if r.name == pkg.name]
        if existing:
            if existing[-1].path != str(pkg.path):  # same content saved elsewhere: follow it
                self._update(existing[-1], path=str(pkg.path))
            return self.get(pkg.name, existing[-1].version)
        assert self.engine is not None
        extra = pkg.extra
        for attempt in range(5):  # two writers may pick the same next version: the primary key refuses one
            try:
                with self.engine.begin() as conn:
                    last = conn.execute(select(models_table.c.version).where(models_table.c.name == pkg.name)
                                        .order_by(models_table.c.version.desc()).limit(1)).scalar()
                    now = _now()
                    conn.execute(models_table.insert().values(
                        name=pkg.name, version=(last or 0) + 1, id=pkg.id, task=pkg.task, parent_id=pkg.parent_id,
                        data_fingerprint=extra.get("data_fingerprint"),
                        metrics=json.dumps(extra.get("metrics") or {}, sort_keys=True, default=str),
                        path=str(pkg.path), status="candidate", registered_at=now, status_changed_at=now))
                return self.get(pkg.name, (last or 0) + 1)
            except exc.IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def list(self, name: str | None = None) -> list[ModelRecord]:
        q = select(models_table).order_by(models_table.c.name, models_table.c.version)
        return self._rows(q if name is None else q.where(models_table.c.name == name))

    def get(self, name: str, version: int | None = None) -> ModelRecord:
        """One version (the latest when ``version`` is None); InputNotFoundError listing what is registered."""
        rows = [r for r in self.list(name) if version is None or r.version == version]
        if not rows:
            known = ", ".join(r.ref for r in self.list()) or "none"
            wanted = f"{name}@{version}" if version is not None else name
            raise InputNotFoundError(f"no registered model {wanted} (registered: {known}); see `medsight models list` "
                                     "or give the package folder")
        return rows[-1]

    def find_id(self, package_id: str) -> ModelRecord | None:
        rows = self._rows(select(models_table).where(models_table.c.id == package_id))
        return rows[-1] if rows else None

    def set_status(self, name: str, version: int, status: str) -> ModelRecord:
        """Move a version forward (candidate -> approved -> retired; candidate -> retired); never backwards."""
        rec = self.get(name, version)
        if status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        if status not in _NEXT[rec.status]:
            raise ConfigError(f"{rec.ref} is {rec.status}; it can move to "
                              f"{' or '.join(_NEXT[rec.status]) or 'nothing (retired is final)'}, not {status}")
        self._update(rec, status=status, status_changed_at=_now())
        return self.get(name, version)

    def move(self, rec: ModelRecord, path: Path) -> None:
        """Point ``rec`` at a verified copy of its package elsewhere (its content, hence its id, unchanged)."""
        self._update(rec, path=str(path))

    def _update(self, rec: ModelRecord, **values: Any) -> None:
        assert self.engine is not None
        with self.engine.begin() as conn:
            conn.execute(update(models_table).where(models_table.c.name == rec.name)
                         .where(models_table.c.version == rec.version).values(**values))


def _record(r: Any) -> ModelRecord:
    return ModelRecord(r.name, int(r.version), r.id, r.task, r.parent_id, r.data_fingerprint,
                       json.loads(r.metrics or "{}"), r.path, r.status, r.registered_at, r.status_changed_at)
