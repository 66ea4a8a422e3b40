"""Shared fixtures: locate the real DICOM files shipped inside pydicom and pydicom-data, on disk only.

``pydicom.data.get_testdata_file`` would try to download a file that is missing; tests must never touch the
network, so we look in the installed packages' folders and skip (with the reason) when a file is absent.
``require_tool`` / ``require_service`` / ``@pytest.mark.requires_tool``: tests needing an external program or
server skip without it locally and FAIL without it when $CI is set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def _dicom_roots() -> list[Path]:
    from pydicom.data import data_manager

    roots = [Path(data_manager.DATA_ROOT) / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data wheel
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent / "data")
    return roots


def find_dicom_test_file(name: str) -> Path | None:
    """The shipped file called ``name`` (e.g. "CT_small.dcm", "RG1_UNCI.dcm"), or None."""
    for root in _dicom_roots():
        candidate = root / name
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def dicom_test_file() -> Callable[[str], Path]:
    """``dicom_test_file("CT_small.dcm")`` -> its path inside the installed package; skips when not shipped."""

    def get(name: str) -> Path:
        path = find_dicom_test_file(name)
        if path is None:
            pytest.skip(f"{name} is not shipped with the installed pydicom / pydicom-data")
        return path

    return get


# segmentation-pipeline tests run tiny convolutions: on a small shared CI box, OpenMP threads waiting for a busy
# core spin and make them many times slower, so these folders get one torch thread (restored afterwards)
ONE_TORCH_THREAD_DIRS = {"data", "synthetic", "segmentation", "plan", "serve"}


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest):  # noqa: ANN202 - generator fixture
    if Path(request.path).parent.name not in ONE_TORCH_THREAD_DIRS:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _private_medsight_home(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202 - generator fixture
    """Commands audit and register into $MEDSIGHT_HOME: tests use a throwaway one, never the user's ~/.medsight."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSIGHT_HOME", str(tmp_path_factory.mktemp("medsight_home")))
    mp.delenv("MEDSIGHT_AUDIT_URL", raising=False)
    mp.delenv("MEDSIGHT_REGISTRY_URL", raising=False)
    yield
    mp.undo()


# --- external tools and services: skip locally, FAIL under CI (a broken apt-get must not turn checks off unseen) ---


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``; when $CI is set, fail it instead (the CI image must provide the tool)."""
    if os.environ.get("CI"):
        pytest.fail(f"required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(*names: str, why: str = "") -> str:
    """The path of the first executable of ``names`` on PATH; otherwise ``unavailable`` (skip, or fail in CI)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    unavailable(f"{' / '.join(names)} not found on PATH" + (f": {why}" if why else ""))
    raise AssertionError("unreachable")


@pytest.fixture(name="require_tool", scope="session")
def _require_tool_fixture() -> Callable[..., str]:
    """``require_tool("chromium", "chromium-browser")`` inside a test or fixture."""
    return require_tool


@pytest.fixture(name="require_service", scope="session")
def _require_service_fixture() -> Callable[[str], None]:
    """``require_service("PostgreSQL did not start: ...")``: skip, or fail when $CI is set."""
    return unavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_tool(*names): needs one of these executables; skipped without "
                                       "it, failed without it when $CI is set")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires_tool"):
        require_tool(*mark.args, why=mark.kwargs.get("why", ""))


class Killed(BaseException):
    """A simulated kill: a BaseException, so no ``except Exception`` in the code under test swallows it."""


class CheckpointKiller:
    """Makes the engine's Nth checkpoint save raise ``Killed`` right after the file reached the disk."""

    Killed = Killed

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import medsight.engine.loop as engine_loop

        self._mp, self._loop, self._real = monkeypatch, engine_loop, engine_loop.save_checkpoint

    def arm(self, n: int) -> None:
        real, saves = self._real, {"n": 0}

        def dying_save(path, state):  # type: ignore[no-untyped-def]
            real(path, state)
            saves["n"] += 1
            if saves["n"] == n:
                raise Killed()

        self._mp.setattr(self._loop, "save_checkpoint", dying_save)

    def disarm(self) -> None:
        self._mp.setattr(self._loop, "save_checkpoint", self._real)


@pytest.fixture
def checkpoint_killer(monkeypatch: pytest.MonkeyPatch) -> CheckpointKiller:
    """A kill right after a chosen checkpoint (the resume tests of every engine task share it)."""
    return CheckpointKiller(monkeypatch)
