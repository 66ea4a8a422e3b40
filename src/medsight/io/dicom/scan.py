"""Finding and parsing DICOM files: every file is read from disk once and its header parsed once.

Two modes. ``headers only`` (``medsight info`` on a folder of several series) parses each header with large values
deferred, so pixel data is never read. ``with pixels`` reads each file's bytes in one call, hashes those bytes for
the provenance and parses the same bytes; native pixel planes go straight into a per-series staging buffer
(``stage.Stager``) so that the parsed datasets do not keep a second copy of the volume alive.
"""

from __future__ import annotations

import io
import itertools
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medsight.errors import CorruptFileError, InputNotFoundError, UnsupportedFormatError
from medsight.files import sha256_bytes
from medsight.io.dicom.tags import FAST_TAGS

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_FAST_PHOTOMETRIC = {"", "MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT",
                     "YBR_PARTIAL_420"}
_READ_AHEAD = 4  # files read and hashed ahead of the parser
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}  # implicit, explicit, deflated


@dataclass
class Header:
    """One parsed file: its dataset (pixel bytes removed once staged), hash and where its pixels went."""

    path: Path
    ds: Dataset
    has_pixels: bool
    sha256: str | None = None
    staged: tuple[Any, int] | None = None  # (staging buffer key, plane index) of a staged plane

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")

    @property
    def n_frames(self) -> int:
        try:
            return max(1, int(self.ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            return 1


def short(exc: BaseException) -> str:
    """An exception's message on one line, at most 160 characters."""
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


def _parse(path: Path, source: Any, magic: bool, strict: bool, defer: str | None,
           tags: list[str] | None = None) -> Dataset | None:
    """Parse a header from a path or bytes; non-DICOM files give None unless ``strict`` (or they claim DICM)."""
    try:
        ds = pydicom.dcmread(source, defer_size=defer, force=magic, specific_tags=tags)
        for tag in list(ds.keys()):  # pydicom decodes values on first use: an impossible VR or length in any
            if tag >> 16 != 0x7FE0:  # element must fail here, as a damaged file, not later in a caller
                ds[tag]
    except InvalidDicomError as exc:
        if strict or magic:
            raise CorruptFileError("not a DICOM file (no DICM preamble, unreadable header); re-export it from "
                                   "the scanner or PACS", path) from exc
        return None
    except Exception as exc:  # pydicom raises many types on damaged bytes
        if strict or magic:
            raise CorruptFileError(f"the DICOM header is damaged ({type(exc).__name__}: {short(exc)}); re-export "
                                   "the file", path) from exc
        return None
    if not magic and "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
        if strict:
            raise CorruptFileError("not a DICOM file (no DICM preamble, no SOP class); re-export it", path)
        return None
    if str(ds.get("MediaStorageSOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", ""))) == \
            _DICOMDIR_SOP_CLASS:
        return None
    return ds


def read_header(path: Path, strict: bool) -> Header | None:
    """Header of one file with large values deferred (pixel data is skipped, not read)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            magic = f.read(4) == b"DICM"
    except OSError as exc:
        raise InputNotFoundError(f"cannot open the file ({exc.strerror}); check permissions", path) from exc
    ds = _parse(path, path, magic, strict, "4 KB")
    return None if ds is None else Header(path, ds, any(k in ds for k in _PIXEL_KEYWORDS))


def _read_and_hash(path: Path) -> tuple[bytes, str]:
    """A file's bytes and their SHA-256 (both release the GIL, so a worker thread overlaps them with parsing)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputNotFoundError(f"cannot read the file ({exc.strerror}); check permissions", path) from exc
    return data, sha256_bytes(data)


def parse_bytes(path: Path, data: bytes, digest: str, strict: bool, stage: Stage | None) -> Header | None:
    """Parse a file's bytes (already hashed) and hand its pixels to ``stage``.

    Files are parsed for the elements in ``FAST_TAGS`` only (what the layout, the series summary, the provenance
    and pydicom's decoders of greyscale/RGB/YBR data read), which halves pydicom's work; files with another
    photometric interpretation (palette colour needs its lookup tables) are parsed in full.
    """
    magic = data[128:132] == b"DICM"
    ds = _parse(path, io.BytesIO(data), magic, strict, None, FAST_TAGS)
    if ds is None:
        return None
    has_pixels = any(k in ds for k in _PIXEL_KEYWORDS)
    if has_pixels and str(ds.get("PhotometricInterpretation", "")).upper() not in _FAST_PHOTOMETRIC:
        ds = _parse(path, io.BytesIO(data), magic, strict, None)  # e.g. palette colour: the decoder needs LUTs
        if ds is None:
            return None
    ds.buffer = None  # pydicom keeps the source buffer for deferred reads; nothing is deferred, free the bytes
    header = Header(path, ds, has_pixels, digest)
    del data
    if stage is not None and header.has_pixels:
        stage(header)
    return header


def _read_all(files: list[Path], strict: Callable[[Path], bool], stage: Stage | None) -> Iterator[Header | None]:
    """Parse every file while a worker thread reads and hashes the next few (bounded read-ahead)."""
    if len(files) < 2:
        for p in files:
            yield parse_bytes(p, *_read_and_hash(p), strict(p), stage)
        return
    ahead: deque[tuple[Path, Future[tuple[bytes, str]]]] = deque()
    it = iter(files)
    with ThreadPoolExecutor(1) as pool:
        for p in itertools.islice(it, _READ_AHEAD):
            ahead.append((p, pool.submit(_read_and_hash, p)))
        while ahead:
            p, fut = ahead.popleft()
            nxt = next(it, None)
            if nxt is not None:
                ahead.append((nxt, pool.submit(_read_and_hash, nxt)))
            yield parse_bytes(p, *fut.result(), strict(p), stage)


def native_plane(ds: Dataset) -> tuple[np.dtype, int, int, int, int] | None:
    """(dtype, rows, cols, bits allocated, bits stored) when ``np.frombuffer`` reads this file exactly, else None."""
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    try:
        if (ts not in _NATIVE_SYNTAXES or "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1
                or int(ds.get("NumberOfFrames", 1) or 1) != 1
                or str(ds.get("PhotometricInterpretation", "")).upper() not in ("MONOCHROME1", "MONOCHROME2")):
            return None
        alloc, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        rows, cols, signed = int(ds.Rows), int(ds.Columns), int(ds.PixelRepresentation) == 1
        high = int(ds.get("HighBit", stored - 1))
    except (AttributeError, TypeError, ValueError):
        return None
    if alloc not in (8, 16, 32) or not 0 < stored <= alloc or high != stored - 1 or rows <= 0 or cols <= 0:
        return None
    return np.dtype(f"<{'i' if signed else 'u'}{alloc // 8}"), rows, cols, alloc, stored


class Stage(Protocol):
    """Takes the pixels of each parsed file (``stage.Stager``); told first how many files there are."""

    def reserve(self, n_files: int) -> None: ...

    def __call__(self, header: Header) -> None: ...


def scan(path: Path, stage: Stage | None = None, with_pixels: bool = False,
         progress: bool = False) -> tuple[Path, list[Header]]:
    """Headers of every DICOM file under ``path`` (a file, or a folder searched recursively).

    ``with_pixels`` reads whole files (hash + full parse, ``stage`` takes the pixels); otherwise headers only.
    """
    if not path.exists():
        raise InputNotFoundError("no such file or folder; check the path", path)
    if path.is_file():
        if stage is not None:
            stage.reserve(1)
        header = next(_read_all([path], lambda p: True, stage)) if with_pixels else read_header(path, True)
        if header is None:
            raise UnsupportedFormatError("this is a DICOMDIR index, not an image; point at the series folder", path)
        return path, [header]
    files = sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith("."))
    if stage is not None:
        stage.reserve(len(files))
    strict = lambda p: p.suffix.lower() == ".dcm"  # noqa: E731 - other files in a folder may be anything
    parsed: Iterable[Header | None] = (_read_all(files, strict, stage) if with_pixels
                                       else (read_header(p, strict(p)) for p in files))
    if progress and len(files) > 1:
        from tqdm.auto import tqdm

        parsed = tqdm(parsed, total=len(files), desc="reading DICOM", unit="file", leave=False)
    headers = [h for h in parsed if h is not None]
    if not headers:
        raise InputNotFoundError("the folder holds no DICOM files; check the path", path)
    return path, headers


def group(headers: Iterable[Header]) -> dict[str, list[Header]]:
    """Headers by SeriesInstanceUID, in scan order."""
    groups: dict[str, list[Header]] = defaultdict(list)
    for h in headers:
        groups[h.series_uid].append(h)
    return dict(groups)
