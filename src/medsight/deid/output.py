"""Writing de-identified objects: whole files only (a killed run leaves none half-written), and never one object over
another (two inputs that share a SOP Instance UID map to one output path: the second is refused, not lost)."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian


def ensure_meta(ds: pydicom.Dataset) -> None:
    """Give the output a complete File Meta header, so that every reader accepts it."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, _little = getattr(ds, "original_encoding", (True, True))
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


_MADE_DIRS: set[Path] = set()


def atomic_write(target: Path, write) -> None:
    """Write through a temporary file and rename: a killed run never leaves a half-written file.

    No fsync per file (it cost more than the de-identification itself): the parent makes a whole batch durable
    with one ``syncfs`` before it records the batch in the report (``medsight.deid.run._Checkpoint``).
    """
    if target.parent not in _MADE_DIRS:
        target.parent.mkdir(parents=True, exist_ok=True)
        _MADE_DIRS.add(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        _claim(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class OutputTaken(Exception):
    """The output path already holds different bytes: two input objects share one SOP Instance UID."""


def _claim(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target`` without ever replacing another object's output.

    Outputs are named by their (pseudonymised) UIDs, so two inputs that share a SOP Instance UID map to one path;
    a plain rename let the last one win silently (the report said both were written). A hard link fails
    atomically when the path exists, also between two workers; equal bytes there are this same output (a resumed
    batch, or an exact duplicate file) and are fine. On a file system without hard links (FAT, some network
    shares) the path is reserved by an exclusive create, also atomic, and our own empty reservation is then
    replaced by the output (a worker that meets the reservation before that sees different bytes: a conflict
    reported, never an output replaced)."""
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        pass
    except OSError:
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            pass
        else:
            os.replace(tmp, target)
            return
    if not filecmp.cmp(tmp, target, shallow=False):
        raise OutputTaken(target)


def write_chunks(path: Path, chunks) -> None:
    with open(path, "wb") as f:
        f.writelines(chunks)


def write_dataset(ds: pydicom.Dataset, target: Path) -> None:
    ensure_meta(ds)
    ds.preamble = b"\x00" * 128  # a preamble may hold anything (a TIFF header, text): never copy it

    def save(tmp: Path) -> None:
        try:
            ds.save_as(tmp, enforce_file_format=True)
        except (TypeError, ValueError):
            # raw elements whose encoding disagrees with the declared transfer syntax: decode them all, retry
            ds.walk(lambda _d, _e: None)
            ds.save_as(tmp, enforce_file_format=True)

    atomic_write(target, save)
