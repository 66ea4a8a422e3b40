"""A de-identification test corpus: real DICOM files shipped with pydicom, with identifiers planted everywhere.

Identifiers go into standard attributes, nested sequences (two levels deep, in sequences the profile keeps),
private blocks (including a private sequence) and free-text fields; every planted string is unique and listed in
the returned manifest, so a test can grep the output bytes for each one. Files are grouped into patients and
studies (several files per study) so UID consistency across files can be checked. Used by tests/deid and
benchmarks/bench_deid.py; needs no network (pydicom's own test files).
"""

from __future__ import annotations

import io
import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medsight.deid.pixels import burned_in_reason

# pydicom test files with pixel data, across modalities and transfer syntaxes (uncompressed, JPEG, J2K, RLE)
BASE_FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "JPEG2000.dcm",
              "SC_rgb.dcm", "rtdose.dcm", "MR2_J2KI.dcm", "emri_small.dcm", "JPEG-lossy.dcm", "RG1_UNCI.dcm",
              "mlut_18.dcm", "image_dfl.dcm", "MR_truncated.dcm", "CT_small.dcm", "liver.dcm")
# files the header flags as possibly carrying burned-in text (held back by default)
FLAGGED_FILES = ("SC_rgb.dcm", "US1_UNCR.dcm")
PLANT_ROOT = "1.2.826.0.1.3680043.10.1199"  # planted "original" UIDs live under this root


@dataclass
class Corpus:
    root: Path
    files: list[Path] = field(default_factory=list)
    planted_strings: list[str] = field(default_factory=list)  # must not occur in any output byte
    original_uids: list[str] = field(default_factory=list)  # must not occur in any output file either
    study_of: dict[str, str] = field(default_factory=dict)  # relative file path -> planted study UID
    flagged: list[str] = field(default_factory=list)  # relative paths expected to be held back


def local_test_files() -> list[Path]:
    """Every .dcm file shipped inside pydicom and pydicom-data, found on disk (pydicom's
    ``get_testdata_files`` may try to download missing files: never in a test)."""
    from pydicom.data import data_manager

    roots = [Path(data_manager.DATA_ROOT) / "test_files"]
    try:
        import data_store

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*.dcm"))


def usable_base_files(include_flagged: bool = False) -> list[Path]:
    """Base files that read, hold pixel data and write back (some test files are deliberately broken)."""
    out = []
    local = {p.name: p for p in local_test_files()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in dict.fromkeys(BASE_FILES + (FLAGGED_FILES if include_flagged else ())):
            if name not in local:
                continue
            try:
                path = local[name]
                ds = pydicom.dcmread(path)
                if "PixelData" not in ds:
                    continue
                ds.save_as(io.BytesIO(), enforce_file_format=True)
            except Exception:
                continue
            if include_flagged or burned_in_reason(ds) is None:
                out.append(path)
    return out


def _person(tag: str) -> str:
    return f"PLANTED^{tag}"


def _plant(ds: Dataset, n: int, patient: int, study_uid: str, series_uid: str, strings: list[str]) -> None:
    """Write identifiers for file ``n`` of ``patient`` into every kind of place the profile must reach."""
    def s(kind: str) -> str:
        value = f"ZQ{kind}{n:05d}X"
        strings.append(value)
        return value

    pid = f"ZQPID{patient:05d}X"
    strings.append(pid)
    ds.PatientName = _person(f"ZQPNAME{patient:05d}X")
    strings.append(f"ZQPNAME{patient:05d}X")
    ds.PatientID = pid
    ds.PatientBirthDate = "19410903"
    ds.PatientAddress = s("ADDR")
    ds.OtherPatientIDs = s("OPID")
    ds.InstitutionName = s("INST")
    ds.ReferringPhysicianName = _person(s("REFPHYS"))
    ds.AccessionNumber = s("ACC")[:16]
    ds.StudyID = s("SID")[:16]
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "20190317", "20190317", "20190317"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.SOPInstanceUID = f"{PLANT_ROOT}.3.{n}"
    ds.FrameOfReferenceUID = f"{PLANT_ROOT}.4.{patient}"
    # free text
    ds.ImageComments = f"scan of {s('COMMENT')}"
    ds.StudyDescription = f"head for {s('STUDYDESC')}"
    ds.SeriesDescription = s("SERIESDESC")
    ds.AdditionalPatientHistory = s("HISTORY")
    ds.PatientComments = s("PCOMMENT")
    # nested sequences: one the profile keeps (recursed into), one with UIDs (replaced), two levels deep
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-A0100", "SRT", "Brain"
    inner.OperatorsName = _person(s("NESTOP"))
    inner.PatientID = pid
    mid = Dataset()
    mid.CodeValue, mid.CodingSchemeDesignator, mid.CodeMeaning = "T-D1100", "SRT", "Head"
    mid.AnatomicRegionModifierSequence = Sequence([inner])
    mid.PerformingPhysicianName = _person(s("NESTPHYS"))
    ds.AnatomicRegionSequence = Sequence([mid])
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = f"{PLANT_ROOT}.3.{n}.99"
    ds.ReferencedImageSequence = Sequence([ref])
    # private block with a value, and a private sequence holding a name
    block = ds.private_block(0x0009, "ZQ ACME PLANTED", create=True)
    block.add_new(0x01, "LO", s("PRIV"))
    pitem = Dataset()
    pitem.PatientName = _person(s("PRIVSEQ"))
    block.add_new(0x02, "SQ", Sequence([pitem]))


def build_corpus(root: str | Path, n_files: int = 24, files_per_study: int = 3, studies_per_patient: int = 2,
                 include_flagged: bool = True, seed: int = 0) -> Corpus:
    """Write ``n_files`` DICOM files with planted identifiers under ``root`` (neutral file names)."""
    root = Path(root)
    rng = random.Random(seed)
    bases = usable_base_files()
    if not bases:
        raise RuntimeError("no usable pydicom test files found")
    flagged_bases = [p for p in usable_base_files(include_flagged=True) if p.name in FLAGGED_FILES]
    corpus = Corpus(root=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = {p: pydicom.dcmread(p) for p in set(bases) | set(flagged_bases)}
        for n in range(n_files):
            study = n // files_per_study
            patient = study // studies_per_patient
            flag = include_flagged and flagged_bases and n % 10 == 9
            base = flagged_bases[n % len(flagged_bases)] if flag else bases[rng.randrange(len(bases))]
            ds = loaded[base].copy()
            study_uid = f"{PLANT_ROOT}.1.{study}"
            series_uid = f"{PLANT_ROOT}.2.{study}.{n % 2}"
            _plant(ds, n, patient, study_uid, series_uid, corpus.planted_strings)
            rel = f"batch{n // 100:03d}/img{n:05d}"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            corpus.files.append(path)
            corpus.study_of[rel] = study_uid
            corpus.original_uids += [study_uid, series_uid, ds.SOPInstanceUID, ds.FrameOfReferenceUID,
                                     f"{PLANT_ROOT}.3.{n}.99"]
            if flag:
                corpus.flagged.append(rel)
    corpus.planted_strings = sorted(set(corpus.planted_strings))
    corpus.original_uids = sorted(set(corpus.original_uids))
    (root.parent / f"{root.name}.planted.json").write_text(json.dumps(
        {"planted_strings": corpus.planted_strings, "original_uids": corpus.original_uids,
         "flagged": corpus.flagged}, indent=1))
    return corpus
