"""Decoding compressed (or otherwise non-native) pixel data exactly as pydicom's ``pixel_array`` gives it.

JPEG 2000 greyscale goes through imagecodecs' OpenJPEG, which releases the GIL, so several files decode at once
on a thread pool (pydicom's own JPEG 2000 plug-in, pylibjpeg-openjpeg, holds the GIL); everything else through
pydicom, whose failures become user errors naming the file.
"""

from __future__ import annotations

import os

import numpy as np

from medsight.errors import CorruptFileError, MissingPixelDataError, UnsupportedFormatError
from medsight.io.dicom.scan import Header, short

_J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}


def _j2k_greyscale(header: Header) -> np.ndarray | None:
    """JPEG 2000 greyscale frames through imagecodecs' OpenJPEG, which releases the GIL (pylibjpeg-openjpeg, which
    pydicom uses, holds it, so threads would not overlap). None when anything differs from what pydicom would give
    (then pydicom decodes the file): the codestreams are lossless-exact in both, so the values are identical.
    """
    ds = header.ds
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if ts not in _J2K_SYNTAXES or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    try:
        import imagecodecs
        from pydicom.encaps import generate_frames

        alloc, signed = int(ds.BitsAllocated), int(ds.PixelRepresentation) == 1
        rows, cols = int(ds.Rows), int(ds.Columns)
        want = np.dtype(f"{'i' if signed else 'u'}{alloc // 8}")
        frames = [imagecodecs.jpeg2k_decode(f) for f in generate_frames(ds.PixelData, number_of_frames=header.n_frames)]
    except Exception:  # no imagecodecs, odd header, damaged stream: pydicom decodes and reports
        return None
    if len(frames) != header.n_frames or any(f.dtype != want or f.shape != (rows, cols) for f in frames):
        return None
    return frames[0] if header.n_frames == 1 else np.stack(frames)


def _decoder_available(ts: object) -> bool:
    """Whether pydicom has a working decoder for this transfer syntax (else a failure is not the file's fault)."""
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(str(ts)).is_available)
    except Exception:  # unknown or unsupported syntax
        return False


def decode(header: Header) -> np.ndarray:
    """One file's pixels as pydicom's ``pixel_array`` gives them; decoder failures name the file."""
    fast = _j2k_greyscale(header)
    if fast is not None:
        return fast
    ds, path = header.ds, header.path
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    ts_name = f"{getattr(ts, 'name', '') or ts}" if ts else "unknown"
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        message = str(exc).lower()
        if not _decoder_available(ts) and ("decod" in message or "plugin" in message or "transfer syntax" in message):
            raise UnsupportedFormatError(
                f"transfer syntax {ts_name} ({ts}) cannot be decoded by the installed pixel handlers; convert the "
                "file to an uncompressed syntax (e.g. `gdcmconv --raw in.dcm out.dcm`)", path) from exc
        raise CorruptFileError(f"pixel data could not be decoded ({short(exc)}); re-export the file", path) from exc
    except AttributeError as exc:
        raise MissingPixelDataError("no pixel data; it is not an image - point medsight at an image file", path) \
            from exc
    except Exception as exc:  # truncated or inconsistent pixel data: ValueError, EOFError, struct.error...
        raise CorruptFileError(f"pixel data is damaged or truncated ({type(exc).__name__}: {short(exc)}); "
                               "re-export the file", path) from exc
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    return arr


DECODE_THREADS: int | None = None
"""Override of the decoding thread count (benchmarks/bench_io.py measures 1 against one per core)."""


def workers(n_files: int, compressed: bool) -> int:
    """Threads for decoding: one per core for compressed data (the codecs release the GIL), else one."""
    if DECODE_THREADS is not None:
        return DECODE_THREADS
    if not compressed or n_files < 4:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8, n_files // 2))
