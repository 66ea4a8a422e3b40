"""Two input objects that share a SOP Instance UID map to one output path (outputs are named by pseudonymised UIDs).

Before, the second silently replaced the first and the report called both "written". Now the first to claim the path
keeps it, the other is reported ``conflict`` and not written; an exact duplicate file is the same output (written)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import data_manager

from medsight.deid.pseudonym import Pseudonymizer
from medsight.deid.run import REPORT_NAME, deidentify_folder

KEY = b"uid conflict key of 32 bytes...."


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / REPORT_NAME, newline="") as f:
        return {r["input"]: r for r in csv.DictReader(f)}


@pytest.fixture()
def clashing(tmp_path: Path) -> Path:
    """a.dcm and b.dcm: one SOP Instance UID, different pixels; c.dcm: a byte copy of a.dcm; d.dcm: its own UID."""
    root = tmp_path / "in"
    root.mkdir()
    ds = pydicom.dcmread(Path(data_manager.DATA_ROOT) / "test_files" / "CT_small.dcm")
    ds.save_as(root / "a.dcm")
    shutil.copyfile(root / "a.dcm", root / "c.dcm")
    pixels = ds.pixel_array.copy()
    pixels[:8, :8] = 0  # a different object under the same UID
    ds.PixelData = pixels.tobytes()
    ds.save_as(root / "b.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.9.7777.424242"
    ds.save_as(root / "d.dcm")
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_object_with_the_same_uid_is_refused_not_written_over(clashing: Path, tmp_path: Path,
                                                                        workers: int) -> None:
    out = tmp_path / f"out{workers}"
    summary = deidentify_folder(clashing, out, Pseudonymizer(KEY), workers=workers, quiet=True)
    rows = _rows(out)
    status = {name: r["status"] for name, r in rows.items()}
    # a (with its byte copy c) and b race for one path; with 2 workers either may claim it first
    a_won = {"a.dcm": "written", "b.dcm": "conflict", "c.dcm": "written", "d.dcm": "written"}
    b_won = {"a.dcm": "conflict", "b.dcm": "written", "c.dcm": "conflict", "d.dcm": "written"}
    assert status in (a_won, b_won)
    assert workers == 2 or status == a_won  # one worker: the sorted order decides
    assert sum(summary.counts.values()) == 4 and summary.counts["conflict"] in (1, 2)
    for name, r in rows.items():
        if r["status"] == "conflict":
            assert r["output"] == "" and "same SOP Instance UID" in r["reason"]
    winner = "a.dcm" if status == a_won else "b.dcm"
    assert len(list(out.rglob("*.dcm"))) == 2  # the shared UID's object and d's
    # the file on disk is the winner's object, pixel for pixel (b has its corner zeroed)
    got = pydicom.dcmread(out / rows[winner]["output"]).pixel_array
    assert np.array_equal(got, pydicom.dcmread(clashing / winner).pixel_array)
    assert not [p for p in out.rglob(".*.tmp")], "a temporary file was left"


def test_a_resumed_run_keeps_the_conflict_and_rewrites_nothing(clashing: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    deidentify_folder(clashing, out, Pseudonymizer(KEY), workers=1, quiet=True)
    before = {p: p.read_bytes() for p in out.rglob("*.dcm")}
    report = (out / REPORT_NAME).read_bytes()
    again = deidentify_folder(clashing, out, Pseudonymizer(KEY), workers=1, quiet=True)
    assert again.resumed_skipped == 4 and again.n_files == 0  # a conflict is a finished row, not redone
    assert {p: p.read_bytes() for p in out.rglob("*.dcm")} == before
    assert (out / REPORT_NAME).read_bytes() == report
    # with one worker the sorted order decides: a is first, so b is the one refused
    assert _rows(out)["b.dcm"]["status"] == "conflict"


def test_without_hard_links_the_claim_still_refuses_a_second_object(clashing: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without hard links (os.link raises EPERM, as on FAT): the same outcome as with them."""
    import errno
    import os

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "out"
    summary = deidentify_folder(clashing, out, Pseudonymizer(KEY), workers=1, quiet=True)
    status = {name: r["status"] for name, r in _rows(out).items()}
    assert status == {"a.dcm": "written", "b.dcm": "conflict", "c.dcm": "written", "d.dcm": "written"}
    assert summary.counts["conflict"] == 1 and len(list(out.rglob("*.dcm"))) == 2
    got = pydicom.dcmread(out / _rows(out)["a.dcm"]["output"]).pixel_array
    assert np.array_equal(got, pydicom.dcmread(clashing / "a.dcm").pixel_array)
    assert not [p for p in out.rglob(".*.tmp")], "a temporary file was left"


def test_without_hard_links_an_output_that_appears_after_a_check_is_not_replaced(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    """The race a check-then-rename loses: another worker's output lands between the check and the rename. The
    claim must not look first (the stand-in ``exists`` says the path is free although it is taken)."""
    import errno
    import os

    from medsight.deid.output import OutputTaken, _claim

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(Path, "exists", lambda self, **kw: False)
    target, tmp = tmp_path / "x.dcm", tmp_path / ".x.tmp"
    target.write_bytes(b"the other worker's object")
    tmp.write_bytes(b"this object")
    with pytest.raises(OutputTaken):
        _claim(tmp, target)
    assert target.read_bytes() == b"the other worker's object"
