"""Fault injection with real processes: ``kill -9`` at random points of ``deid`` and ``evaluate``, then rerun.

The rerun's result must equal an uninterrupted run's, and the interrupted run must leave nothing partial where a
user looks: the evaluation folder is absent or complete, the de-identification report holds whole rows only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import data_manager

TABLES = ("per_case.csv", "summary.csv", "summary.json")
KILL_AT = (0.15, 0.5, 0.85)  # shares of an uninterrupted run's wall time: in start-up, mid-work, near the end


def _medsight(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "-q", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _run(*argv: str) -> float:
    """Run medsight to the end; its wall time in seconds."""
    t = time.perf_counter()
    p = _medsight(*argv)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    return time.perf_counter() - t


def _kill_after(seconds: float, *argv: str) -> bool:
    """Start medsight, SIGKILL it after ``seconds``; True when it was still running (the kill landed)."""
    p = _medsight(*argv)
    try:
        p.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        return True


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 small DICOM files (copies of pydicom's CT_small with their own patients and UIDs)."""
    root = tmp_path_factory.mktemp("deid_in")
    ds = pydicom.dcmread(Path(data_manager.DATA_ROOT) / "test_files" / "CT_small.dcm")
    for i in range(60):
        ds.PatientID, ds.PatientName = f"PAT{i // 4:04d}", f"DOE^PATIENT{i // 4}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.9.7777.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(root / f"{i:04d}.dcm")
    return root


@pytest.mark.slow
def test_deid_killed_then_rerun_equals_uninterrupted(dicom_folder: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"fault injection key, 32 bytes.." * 2)
    ref = tmp_path / "ref"
    whole = _run("deid", str(dicom_folder), str(ref), "--key-file", str(key), "-j", "1")
    landed = 0
    for i, t in enumerate(share * whole for share in KILL_AT):
        out = tmp_path / f"out{i}"
        landed += _kill_after(t, "deid", str(dicom_folder), str(out), "--key-file", str(key), "-j", "1")
        report = out / "deid_report.csv"
        if report.exists():  # whatever a kill leaves, the report holds whole rows
            text = report.read_bytes()
            assert text == b"" or text.endswith(b"\n"), "half-written report row"
        _run("deid", str(dicom_folder), str(out), "--key-file", str(key), "-j", "1")
        assert _tree(out).keys() == _tree(ref).keys()
        got, want = _tree(out), _tree(ref)
        assert all(got[k] == want[k] for k in want if k.endswith(".dcm")), "a rerun wrote different files"
        rows = sorted(csv.DictReader(io.StringIO(got["deid_report.csv"].decode())), key=lambda r: r["input"])
        ref_rows = sorted(csv.DictReader(io.StringIO(want["deid_report.csv"].decode())), key=lambda r: r["input"])
        assert rows == ref_rows
    assert landed >= 2, "the kills all came after the run ended: the test proved nothing"


def test_deid_resume_drops_a_half_written_row(dicom_folder: Path, tmp_path: Path) -> None:
    """A kill inside the report write (simulated: the cut a kill leaves) must not join onto the next row."""
    key = tmp_path / "key"
    key.write_bytes(b"fault injection key, 32 bytes.." * 2)
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run("deid", str(dicom_folder), str(ref), "--key-file", str(key), "-j", "1")
    _run("deid", str(dicom_folder), str(out), "--key-file", str(key), "-j", "1")
    report = out / "deid_report.csv"
    lines = report.read_bytes().splitlines(keepends=True)
    report.write_bytes(b"".join(lines[:30]) + lines[30][: len(lines[30]) // 2])  # rows 30.. lost, one cut
    _run("deid", str(dicom_folder), str(out), "--key-file", str(key), "-j", "1")
    rows = list(csv.DictReader(report.open(newline="")))
    ref_rows = list(csv.DictReader((ref / "deid_report.csv").open(newline="")))
    assert sorted(r["input"] for r in rows) == sorted(r["input"] for r in ref_rows)
    assert all(r["status"] == "written" for r in rows)


@pytest.mark.slow
def test_evaluate_killed_leaves_old_or_new_never_a_mix(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    csv_path = tmp_path / "pred.csv"
    y = rng.integers(0, 2, 400)
    s = np.clip(y * 0.3 + rng.normal(0.35, 0.2, 400), 0, 1)
    site = rng.choice(["a", "b", "c"], 400)
    csv_path.write_text("case_id,y_true,y_score,site\n" +
                        "".join(f"c{i},{y[i]},{s[i]:.4f},{site[i]}\n" for i in range(400)))
    argv = ("evaluate", "cls", str(csv_path), "--threshold", "0.5", "--n-boot", "400", "--group-by", "site", "--min-cases", "5")
    ref = tmp_path / "ref"
    whole = _run(*argv, "--out", str(ref))
    landed = 0
    for i, t in enumerate(share * whole for share in KILL_AT):
        out = tmp_path / f"eval{i}"
        landed += _kill_after(t, *argv, "--out", str(out))
        if out.exists():  # after a kill the folder is complete or absent
            assert {"per_case.csv", "summary.csv", "subgroups.csv", "summary.json"} <= {p.name for p in out.iterdir()}
        _run(*argv, "--out", str(out))
        got, want = _tree(out), _tree(ref)
        assert got.keys() == want.keys()
        for k in want:
            if k == "summary.json":  # everything but the creation time
                a, b = json.loads(got[k]), json.loads(want[k])
                a.pop("created"), b.pop("created")
                a.pop("predictions"), b.pop("predictions")
                assert a == b
            else:
                assert got[k] == want[k], k
    assert landed >= 2, "the kills all came after the run ended: the test proved nothing"
