"""Checking a submitted study before anything of it is stored: DICOM only, one patient, one study.

Client file names are never used as paths: instances are stored under a digest of their SOP Instance UID, so a
name such as ``../../etc/passwd`` can neither escape the store nor overwrite another study.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medsight.errors import MedsightError


class IntakeError(MedsightError):
    """A submitted study was refused; the message says why (HTTP 400)."""


@dataclass(frozen=True)
class Study:
    study_uid: str
    patient_id_sha256: str
    instances: tuple[tuple[str, bytes], ...]  # (SOP Instance UID, file bytes)


def check_study(files: list[tuple[str, bytes]]) -> Study:
    """Parse every file's header; refuse non-DICOM files and studies that mix patients or studies."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not files:
        raise IntakeError("no files were uploaded; send the study's DICOM instances as multipart 'files'")
    studies, patients, instances = set(), set(), {}
    for name, data in files:
        shown = os.path.basename(name or "")[:80] or "(unnamed)"
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as e:
            raise IntakeError(f"'{shown}' is not a DICOM Part 10 file ({e.__class__.__name__}); upload DICOM only")
        sop = str(getattr(ds, "SOPInstanceUID", "") or "")
        study = str(getattr(ds, "StudyInstanceUID", "") or "")
        if not sop or not study:
            raise IntakeError(f"'{shown}' has no SOP Instance UID or Study Instance UID; it cannot be traced")
        studies.add(study)
        patients.add(str(getattr(ds, "PatientID", "") or ""))
        instances[sop] = data
    if len(patients) > 1:
        raise IntakeError(f"the upload mixes {len(patients)} patients; submit one patient's study at a time")
    if len(studies) > 1:
        raise IntakeError(f"the upload mixes {len(studies)} studies; submit one study at a time")
    pid = hashlib.sha256(next(iter(patients)).encode()).hexdigest()
    return Study(next(iter(studies)), pid, tuple(sorted(instances.items())))


def store_study(study: Study, folder: Path) -> Path:
    """Write the instances into ``folder`` as one unit (temporary sibling, then rename)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for sop, data in study.instances:
            (tmp / (hashlib.sha256(sop.encode()).hexdigest()[:32] + ".dcm")).write_bytes(data)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
