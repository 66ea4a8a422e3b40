"""The registry on SQLite and on a real PostgreSQL server: versions per name, idempotent ids, status moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsight.errors import ConfigError, InputNotFoundError
from medsight.package import PackageError, load_package, save_package
from medsight.package.registry import Registry


def _exercise(url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"labels": ["a"]}))
    a = save_package(src, tmp_path / "a", task="classification", name="reg-test", registry_url=url,
                     extra={"data_fingerprint": "f" * 64, "metrics": {"val_auc": 0.9}})
    (src / "config.json").write_text(json.dumps({"labels": ["b"]}))
    b = save_package(src, tmp_path / "b", task="classification", name="reg-test", registry_url=url)
    reg = Registry(url)
    rows = reg.list("reg-test")
    assert [(r.version, r.id, r.status) for r in rows] == [(1, a.id, "candidate"), (2, b.id, "candidate")]
    assert rows[0].data_fingerprint == "f" * 64 and rows[0].metrics == {"val_auc": 0.9}
    assert reg.get("reg-test").version == 2 and reg.find_id(a.id).ref == "reg-test@1"
    assert Registry(url).register(load_package(tmp_path / "a", registry_url=url)).version == 1  # same id: same row
    assert reg.set_status("reg-test", 1, "approved").status == "approved"
    with pytest.raises(ConfigError, match="approved; it can move to retired"):
        reg.set_status("reg-test", 1, "candidate")
    reg.set_status("reg-test", 1, "retired")
    with pytest.raises(PackageError, match="reg-test@1 is retired"):
        load_package("reg-test@1", registry_url=url)
    assert load_package("reg-test@1", registry_url=url, allow_retired=True).id == a.id
    with pytest.raises(InputNotFoundError, match="no registered model reg-test@7"):
        load_package("reg-test@7", registry_url=url)


def test_registry_on_sqlite(tmp_path: Path) -> None:
    _exercise(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)


def test_registry_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    with create_engine(postgres_url).begin() as conn:  # a clean table for this test
        conn.execute(text("DROP TABLE IF EXISTS models"))
    _exercise(postgres_url, tmp_path)
