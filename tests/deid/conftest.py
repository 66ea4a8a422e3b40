"""A planted-identifier corpus from pydicom's own DICOM files, built once per test session."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.synthetic.phi_corpus import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("deid") / "in", n_files=30, files_per_study=3,
                        studies_per_patient=2, include_flagged=True)


@pytest.fixture(scope="session")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "deid.key"
    path.write_bytes(bytes(range(7, 39)))  # 32 fixed bytes
    return path


def _need_tool(name: str) -> str:
    """Path of an external program; under CI a missing one fails the test, elsewhere it skips with the reason."""
    import os
    import shutil

    path = shutil.which(name)
    if name == "tesseract" and path is not None:  # the redaction reads through tesserocr's in-process API
        import importlib.util

        if importlib.util.find_spec("tesserocr") is None:
            path = None
    if path is None:
        message = f"{name} is not installed (Debian: tesseract-ocr / dicom3tools; PyPI: tesserocr)"
        if os.environ.get("CI"):
            pytest.fail(message + " and CI is set: install it")
        pytest.skip(message)
    return path


def _deid_data_file(rel: str):
    """A file of the deid-data package (real ultrasound with burned-in names), found on disk; skips when absent."""
    import importlib.util
    import os
    from pathlib import Path

    spec = importlib.util.find_spec("deid_data")
    path = Path(spec.origin).parent / "data" / rel if spec and spec.origin else None
    if path is None or not path.is_file():
        message = f"deid-data file {rel} not installed (pip install deid-data)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def need_tool():
    """``need_tool("tesseract")`` -> its path; fails under CI when missing, skips otherwise."""
    return _need_tool


@pytest.fixture(scope="session")
def deid_data_file():
    """``deid_data_file("ultrasounds/RGB_IMAGE.dcm")`` -> its path in the installed deid-data package."""
    return _deid_data_file


_DCIODVFY_VALUE = __import__("re").compile(r"\[\d+\] = <[^>]*>|values are .*$|= '.*?' \(0x[0-9a-f]+\)")


def _dciodvfy_errors(path) -> set[str]:
    """The distinct error lines dicom3tools' dciodvfy prints for one file, values blanked (UIDs, dates change
    by design); warnings ignored."""
    import subprocess

    _need_tool("dciodvfy")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=120)
    text = (run.stdout + run.stderr).decode("latin-1")
    return {_DCIODVFY_VALUE.sub("<value>", line.strip()) for line in text.splitlines() if line.startswith("Error")}


@pytest.fixture(scope="session")
def dciodvfy_errors():
    """``dciodvfy_errors(path)`` -> set of normalised error lines (fails under CI when dciodvfy is missing)."""
    return _dciodvfy_errors


@pytest.fixture
def read_area():
    """Plain Tesseract (the independent reader) on a string's own area: cut out, turned level, scaled x2, both
    polarities. ``no_auto_invert`` stops Tesseract inverting light-on-dark lines itself (faint-text tests)."""
    import pytesseract
    from PIL import Image

    def read(frame: np.ndarray, box, rotation: int, no_auto_invert: bool = False) -> str:
        x0, y0, x1, y1 = box
        crop = frame[max(0, y0 - 6):y1 + 6, max(0, x0 - 6):x1 + 6]
        crop = np.ascontiguousarray(np.rot90(crop, -1)) if rotation else crop
        img = Image.fromarray(crop).resize((crop.shape[1] * 2, crop.shape[0] * 2), Image.BICUBIC)
        config = "--psm 7" + (" -c tessedit_do_invert=0" if no_auto_invert else "")
        pages = (img, Image.eval(img, lambda v: 255 - v))
        return " ".join(pytesseract.image_to_string(im, config=config) for im in pages)

    return read
