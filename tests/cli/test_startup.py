"""Start-up cost: `medsight --help` and `medsight info FILE` must not import the heavy libraries.

Each command runs in a fresh interpreter (a subprocess) that reports which of the heavy modules ended up in
``sys.modules``; torch alone costs seconds to import, so a stray top-level import anywhere on these paths shows
here. The import-time figure itself is recorded by benchmarks/bench_io.py in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti

HEAVY = ("torch", "monai", "SimpleITK", "pandas", "matplotlib")

_PROBE = """
import json, sys
from medsight.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _heavy_modules_after(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_help_imports_no_heavy_module() -> None:
    assert _heavy_modules_after("--help") == []


def test_info_on_dicom_imports_no_heavy_module(dicom_test_file) -> None:
    assert _heavy_modules_after("-q", "info", "--json", str(dicom_test_file("CT_small.dcm"))) == []


def test_info_on_nifti_imports_no_heavy_module(tmp_path: Path) -> None:
    path = write_nifti(Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), Geometry.identity(3)),
                       tmp_path / "a.nii.gz")
    assert _heavy_modules_after("-q", "info", "--json", str(path)) == []
