"""Fixtures for the triage service: a real (tiny) segmentation package, a real CT series, tool checks."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest


def require_tool(name: str, path: str | None = None) -> str:
    """The tool's path; under CI a missing tool fails the test, elsewhere it skips with the reason."""
    found = path if path and Path(path).exists() else shutil.which(name)
    if found:
        return found
    msg = f"{name} is not installed (Debian package; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory, dicom_test_file) -> Path:
    """Eight slices built from pydicom's real CT_small.dcm (128x128): one patient, one study, one series."""
    import pydicom
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    out = tmp_path_factory.mktemp("ct_series")
    series_uid, study_uid = generate_uid(entropy_srcs=["ct-series"]), generate_uid(entropy_srcs=["ct-study"])
    for i in range(8):
        ds = copy.deepcopy(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["ct", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ipp = [float(v) for v in src.ImagePositionPatient]
        ipp[2] += 5.0 * i
        ds.ImagePositionPatient, ds.InstanceNumber, ds.SliceThickness = ipp, i + 1, 5.0
        ds.save_as(out / f"slice_{i:02d}.dcm", enforce_file_format=True)
    return out


@pytest.fixture(scope="session")
def seg_package(tmp_path_factory) -> Path:
    """A one-channel toy segmentation model, planned and trained through the CLI, saved as a model package."""
    from click.testing import CliRunner

    from medsight.cli.main import cli
    from medsight.package import load_package, save_package
    from medsight.synthetic.toy import make_toy_dataset

    base = tmp_path_factory.mktemp("seg_package")
    os.environ.setdefault("MEDSIGHT_HOME", str(base / "home"))
    root = make_toy_dataset(base / "Dataset001_Toy", n_cases=10, shape=(24, 20, 16), channels=1)
    runner = CliRunner()
    r = runner.invoke(cli, ["-q", "plan", str(root), "--memory-gb", "0.05", "--filters", "8", "--epochs", "2",
                            "--iterations", "4"])
    assert r.exit_code == 0, r.output
    model = base / "model"
    r = runner.invoke(cli, ["-q", "train", str(root), "--fold", "0", "--model-dir", str(model)])
    assert r.exit_code == 0, r.output
    if not (model / "manifest.json").exists():
        pkg = save_package(model, base / "package", task="segmentation", name="toy-seg")
    else:
        pkg = load_package(model)
    approve(pkg)
    return pkg.path


def approve(pkg) -> None:  # noqa: ANN001
    """The service serves approved versions only: approve ``pkg`` in the registry ($MEDSIGHT_HOME)."""
    from medsight.package.registry import Registry

    rec = Registry().find_id(pkg.id)
    if rec.status == "candidate":
        Registry().set_status(rec.name, rec.version, "approved")


@pytest.fixture(scope="session")
def study_with_localizer(tmp_path_factory, ct_series) -> Path:
    """The CT volume plus, in the same study, a 3-slice, 3-plane localizer (as scanners make them)."""
    import pydicom
    from pydicom.uid import generate_uid

    out = tmp_path_factory.mktemp("study_with_localizer")
    for p in ct_series.glob("*.dcm"):
        shutil.copy(p, out / p.name)
    first = pydicom.dcmread(next(iter(sorted(ct_series.glob("*.dcm")))))
    series_uid = generate_uid(entropy_srcs=["localizer"])
    planes = ([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1])  # axial, coronal, sagittal
    for i, iop in enumerate(planes):
        ds = copy.deepcopy(first)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 1, "Localizer"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["localizer", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient, ds.InstanceNumber = iop, i + 1
        ds.save_as(out / f"loc_{i}.dcm", enforce_file_format=True)
    return out
