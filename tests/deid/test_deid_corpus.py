"""Acceptance for `medsight deid` on the planted corpus: nothing planted survives, pixels unchanged, UIDs linked."""

from __future__ import annotations

import csv
import hashlib
import warnings
from pathlib import Path

import pydicom
import pytest

from medsight.cli.main import main
from medsight.deid.pseudonym import Pseudonymizer
from medsight.deid.run import REPORT_NAME, RunOptions, deidentify_folder
from medsight.errors import ConfigError


def _run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


def _report(out_dir: Path) -> dict[str, dict]:
    with open(out_dir / REPORT_NAME, newline="") as f:
        return {r["input"]: r for r in csv.DictReader(f)}


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def first_run(corpus, key_file, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("MEDSIGHT_HOME", str(tmp_path_factory.mktemp("home")))
    out = tmp_path_factory.mktemp("out") / "run1"
    summary = deidentify_folder(corpus.root, out, Pseudonymizer.from_file(key_file), workers=2, quiet=True)
    return out, summary


def test_cli_run_leaves_no_planted_identifier(corpus, key_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    code, text = _run_cli(["-q", "deid", str(corpus.root), str(out), "--key-file", str(key_file), "-j", "2"],
                          capsys)
    assert code == 0, text
    blobs = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    written = [p for p in blobs if p.suffix == ".dcm"]
    assert len(written) == len(corpus.files) - len(corpus.flagged)
    everything = b"\n".join(blobs.values())
    leaked = [s for s in corpus.planted_strings + corpus.original_uids if s.encode() in everything]
    assert leaked == []
    key = key_file.read_bytes()
    assert key not in everything and key.hex() not in text and key.hex().encode() not in everything
    # the run was audited, without the key
    from medsight.audit import AuditLog

    records = list(AuditLog(str(tmp_path / "home" / "audit.db")).records())
    assert [r.event for r in records] == ["deid.run"] and records[0].details["counts"]["written"] == len(written)
    assert key.hex() not in str(records[0].details)


def test_pixels_unchanged_and_headers_marked(corpus, first_run):
    out, summary = first_run
    assert summary.counts["written"] == len(corpus.files) - len(corpus.flagged)
    report = _report(out)
    for path in corpus.files:
        rel = path.relative_to(corpus.root).as_posix()
        row = report[rel]
        if rel in corpus.flagged:
            assert row["status"] == "flagged" and "burned-in" in row["reason"] and row["output"] == ""
            continue
        assert row["status"] == "written", row
        src, dst = _read(path), _read(out / row["output"])
        assert hashlib.sha256(dst.PixelData).hexdigest() == hashlib.sha256(src.PixelData).hexdigest() \
            == row["pixel_sha256"]
        assert dst.PatientIdentityRemoved == "YES"
        assert dst.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert dst.file_meta.MediaStorageSOPInstanceUID == dst.SOPInstanceUID
        assert "StudyDate" not in dst or dst.StudyDate == ""  # dates removed (not shifted) by default
        assert not any(e.tag.is_private for e in dst.iterall())
        # nested sequences: PatientID pseudonymised at depth 2, names gone, referenced UIDs replaced
        inner = dst.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
        assert inner.PatientID == dst.PatientID and dst.PatientID.startswith("MS")
        assert inner.OperatorsName != src.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].OperatorsName
        ref = dst.ReferencedImageSequence[0]
        assert ref.ReferencedSOPInstanceUID.startswith("2.25.")
        assert ref.ReferencedSOPClassUID == src.SOPClassUID  # a standard UID is kept


def test_study_uids_linked_across_files_and_runs(corpus, key_file, first_run, tmp_path):
    out, _ = first_run
    report = _report(out)
    by_study: dict[str, set[str]] = {}
    for rel, row in report.items():
        if row["status"] == "written":
            by_study.setdefault(corpus.study_of[rel], set()).add(_read(out / row["output"]).StudyInstanceUID)
    assert len(by_study) >= 8
    assert all(len(v) == 1 for v in by_study.values())  # one output study UID per input study
    outs = [next(iter(v)) for v in by_study.values()]
    assert len(set(outs)) == len(outs) and not set(outs) & set(by_study)  # distinct, and differ from originals
    # same key, second run: identical UIDs and patient IDs; another key: different ones
    again = deidentify_folder(corpus.root, tmp_path / "run2", Pseudonymizer.from_file(key_file), workers=1,
                              quiet=True)
    assert again.counts["written"] == sum(r["status"] == "written" for r in report.values())
    assert {r["output"] for r in _report(tmp_path / "run2").values()} == {r["output"] for r in report.values()}
    other = deidentify_folder(corpus.root, tmp_path / "run3", Pseudonymizer(b"another key of 32 bytes........"),
                              workers=1, quiet=True)
    assert other.counts["written"] == again.counts["written"]
    outs3 = {r["output"] for r in _report(tmp_path / "run3").values() if r["output"]}
    assert not outs3 & {r["output"] for r in report.values() if r["output"]}


def test_output_reads_in_simpleitk(corpus, first_run):
    sitk = pytest.importorskip("SimpleITK")
    out, _ = first_run
    rows = [r for r in _report(out).values() if r["status"] == "written"]
    kinds = {}
    for r in rows:  # one file per source image kind (transfer syntax/modality)
        src = _read(out / r["output"])
        kinds.setdefault((str(src.file_meta.TransferSyntaxUID), src.Modality, src.Rows), r["output"])
    for rel in kinds.values():
        img = sitk.ReadImage(str(out / rel))
        assert img.GetSize()[0] == _read(out / rel).Columns


def test_dates_shifted_keep_intervals(corpus, key_file, tmp_path):
    out = tmp_path / "shifted"
    pseudo = Pseudonymizer.from_file(key_file)
    deidentify_folder(corpus.root, out, pseudo, RunOptions(shift_dates=True), workers=1, quiet=True)
    ages = set()
    for row in _report(out).values():
        if row["status"] != "written":
            continue
        ds = _read(out / row["output"])
        assert ds.StudyDate != "20190317" and ds.LongitudinalTemporalInformationModified == "MODIFIED"
        # 20190317 - 19410903 = 28319 days in the input; the shift must keep it
        fmt = "%Y%m%d"
        import datetime as dt

        ages.add((dt.datetime.strptime(ds.StudyDate, fmt) - dt.datetime.strptime(ds.PatientBirthDate, fmt)).days)
    assert ages == {28319}


def test_resume_and_key_mismatch(corpus, key_file, tmp_path):
    out = tmp_path / "resume"
    pseudo = Pseudonymizer.from_file(key_file)
    full = deidentify_folder(corpus.root, out, pseudo, workers=1, quiet=True)
    report = out / REPORT_NAME
    lines = report.read_text().splitlines(keepends=True)
    report.write_text("".join(lines[:-5]))  # as if killed five files before the end
    again = deidentify_folder(corpus.root, out, pseudo, workers=1, quiet=True)
    assert again.resumed_skipped == full.n_files - 5 and again.n_files == 5
    assert len(_report(out)) == full.n_files
    with pytest.raises(ConfigError, match="different key"):
        deidentify_folder(corpus.root, out, Pseudonymizer(b"x" * 32), workers=1, quiet=True)


def test_cli_errors_are_one_line(tmp_path, capsys):
    code, text = _run_cli(["deid", str(tmp_path / "missing"), str(tmp_path / "o"), "--key-file",
                           str(tmp_path / "nokey")], capsys)
    assert code == 2 and "key file not found" in text and "Traceback" not in text


def test_allow_burned_in_writes_flagged_files_and_says_so(corpus, key_file, tmp_path):
    out = tmp_path / "allow"
    summary = deidentify_folder(corpus.root, out, Pseudonymizer.from_file(key_file),
                                RunOptions(write_flagged=True), workers=1, quiet=True)
    assert summary.counts["written"] == len(corpus.files)
    report = _report(out)
    for rel in corpus.flagged:
        assert report[rel]["status"] == "written" and report[rel]["reason"].startswith("written although flagged")
        ds = _read(out / report[rel]["output"])
        assert ds.Modality == "US" and ds.PatientIdentityRemoved == "YES"


def test_mixed_folder_non_dicom_skipped_and_fallback_path_used(tmp_path, key_file):
    import shutil

    from medsight.synthetic.phi_corpus import local_test_files

    src = tmp_path / "in"
    src.mkdir()
    local = {p.name: p for p in local_test_files()}
    shutil.copy(local["MR_small_bigendian.dcm"], src / "big_endian")  # needs the pydicom path
    shutil.copy(local["CT_small.dcm"], src / "ct")  # takes the byte-level path
    (src / "notes.txt").write_text("PatientName: Jane Roe\n")
    summary = deidentify_folder(src, tmp_path / "out", Pseudonymizer.from_file(key_file), workers=1, quiet=True)
    report = _report(tmp_path / "out")
    assert report["notes.txt"]["status"] == "skipped" and report["notes.txt"]["reason"] == "not a DICOM file"
    assert summary.counts == {"written": 2, "skipped": 1}
    for name in ("big_endian", "ct"):
        original, ds = _read(src / name), _read(tmp_path / "out" / report[name]["output"])
        assert ds.PatientID == Pseudonymizer.from_file(key_file).patient_id(original.PatientID)
        assert ds.PatientName == ds.PatientID and ds.StudyInstanceUID != original.StudyInstanceUID
        assert ds.PixelData == original.PixelData and not any(e.tag.is_private for e in ds.iterall())
