"""Shared fixtures: locate the real DICOM files shipped inside pydicom and pydicom-data, on disk only.

``pydicom.data.get_testdata_file`` would try to download a file that is missing; tests must never touch the
network, so we look in the installed packages' folders and skip (with the reason) when a file is absent.
"""

from __future__ import annotations

import importlib.util
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
