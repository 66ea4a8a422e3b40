"""Fixtures for package tests: a private $MEDSIGHT_HOME per test, and one small trained classifier package.

The classifier is trained once per session by the real ``medsight train-cls`` command on noise images with a
bright square (tests/classification's generator), so every package test works on a real package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from medsight.cli.main import main

_AUDIT_CONFTEST = Path(__file__).resolve().parents[1] / "audit" / "conftest.py"
_CLS_CONFTEST = Path(__file__).resolve().parents[1] / "classification" / "conftest.py"


def _load(path: Path, name: str):  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


postgres_url = _load(_AUDIT_CONFTEST, "_medsight_audit_pg_fixture").postgres_url
write_square_dataset = _load(_CLS_CONFTEST, "_medsight_cls_squares").write_square_dataset


def run_cli(*args: str) -> int:
    """Run the medsight CLI in-process; returns its exit status."""
    try:
        main([str(a) for a in args])
    except SystemExit as err:
        return int(err.code or 0)
    return 0


@pytest.fixture(autouse=True)
def medsight_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MEDSIGHT_HOME", str(home))
    monkeypatch.delenv("MEDSIGHT_AUDIT_URL", raising=False)
    monkeypatch.delenv("MEDSIGHT_REGISTRY_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def square_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest, _ = write_square_dataset(tmp_path_factory.mktemp("squares"), n=48, size=32, side=8)
    return manifest


@pytest.fixture(scope="session")
def trained_cls(tmp_path_factory: pytest.TempPathFactory, square_manifest: Path) -> tuple[Path, Path]:
    """(package folder, the MEDSIGHT_HOME it was registered in) from one `medsight train-cls` run."""
    base = tmp_path_factory.mktemp("cls")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSIGHT_HOME", str(base / "home"))
    try:
        code = run_cli("-q", "train-cls", square_manifest, "--out", base / "pkg", "--backbone", "resnet10-slim",
                       "--input-size", "32,32", "--epochs", "2", "--batch-size", "16", "--name", "squares",
                       "--val-fraction", "0.5")
    finally:
        mp.undo()
    assert code == 0
    return base / "pkg", base / "home"


@pytest.fixture
def cls_package(trained_cls: tuple[Path, Path], tmp_path: Path, medsight_home: Path) -> Path:
    """A fresh copy of the trained package, registered in this test's own registry."""
    import shutil

    from medsight.package import load_package
    from medsight.package.registry import Registry

    dest = tmp_path / "squares_pkg"
    shutil.copytree(trained_cls[0], dest)
    Registry().register(load_package(dest))
    return dest


