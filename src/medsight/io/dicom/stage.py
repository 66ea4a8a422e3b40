"""Pixel data -> one (k, rows, cols[, c]) stack of stored values in slice order, with as few copies as possible.

While the files are scanned, every single-frame greyscale plane of the wanted series is written once into a
per-series staging buffer, in file order:
- native pixels (uncompressed little endian, 8/16/32 bits allocated) through ``np.frombuffer``, with the unused
  high bits masked or sign-extended exactly as pydicom's ``pixel_array`` does;
- compressed pixels (JPEG 2000, RLE, JPEG, JPEG-LS) decoded on a thread pool straight into their plane, so the
  encoded bytes are freed as soon as each plane is done.
After sorting, the buffer's planes are permuted in place and the buffer becomes the volume: no second full-volume
array. Anything else (colour, palette, big endian, multi-frame) is decoded after sorting into a new stack.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import CorruptFileError
from medsight.io.dicom.decode import decode, workers
from medsight.io.dicom.scan import Header, native_plane

_Key = tuple[str, int, int, str]


def _fix_unused_bits(plane: np.ndarray, alloc: int, stored: int) -> None:
    """Clear (unsigned) or sign-extend (signed) the bits above BitsStored in place, as pydicom does."""
    if stored == alloc:
        return
    if plane.dtype.kind == "u":
        plane &= plane.dtype.type((1 << stored) - 1)
    else:
        shift = plane.dtype.type(alloc - stored)
        np.left_shift(plane, shift, out=plane)
        np.right_shift(plane, shift, out=plane)


def _compressed_plane(header: Header) -> tuple[np.dtype, int, int] | None:
    """(dtype pydicom decodes to, rows, cols) for a compressed single-frame greyscale file, else None."""
    ds = header.ds
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        if (not getattr(ts, "is_compressed", False) or header.n_frames != 1 or "PixelData" not in ds
                or int(ds.get("SamplesPerPixel", 1) or 1) != 1
                or str(ds.get("PhotometricInterpretation", "")).upper() not in ("MONOCHROME1", "MONOCHROME2")):
            return None
        alloc, rows, cols = int(ds.BitsAllocated), int(ds.Rows), int(ds.Columns)
        signed = int(ds.PixelRepresentation) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    if alloc not in (8, 16, 32) or rows <= 0 or cols <= 0:
        return None
    return np.dtype(f"{'i' if signed else 'u'}{alloc // 8}"), rows, cols


def _decode_into(header: Header, plane: np.ndarray) -> None:
    arr = decode(header)
    if arr.shape != plane.shape or arr.dtype != plane.dtype:
        raise CorruptFileError(f"decoded pixels are {arr.shape[-1]}x{arr.shape[0]} {arr.dtype}, the header says "
                               f"{plane.shape[1]}x{plane.shape[0]} {plane.dtype}; re-export the file", header.path)
    plane[...] = arr
    del header.ds.PixelData  # frees the encoded bytes and pydicom's cached decoded array


class Stager:
    """Collects greyscale planes of the wanted series, in file order, into one buffer per series and plane shape.

    Without a wanted series it stages the first image series it meets and gives up (freeing what it holds) at the
    second: a folder of several series is only listed, never read whole, unless one is picked.
    """

    def __init__(self, series_uid: str | None = None) -> None:
        self.series_uid = series_uid
        self.capacity = 0
        self.buffers: dict[_Key, np.ndarray] = {}
        self.used: dict[_Key, int] = {}
        self.seen: set[str] = set()
        self.kept: list[Header] = []  # headers whose pixel bytes stay in the dataset (decoded after sorting)
        self.dropped = False
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()

    def reserve(self, n_files: int) -> None:
        self.capacity = n_files

    def _slot(self, uid: str, dtype: np.dtype, rows: int, cols: int, header: Header) -> np.ndarray:
        key = (uid, rows, cols, dtype.str)
        if key not in self.buffers:
            self.buffers[key] = np.empty((max(self.capacity, 1), rows, cols), dtype)
            self.used[key] = 0
        index = self.used[key]
        self.used[key] = index + 1
        header.staged = (key, index)
        return self.buffers[key][index]

    def __call__(self, header: Header) -> None:
        uid = header.series_uid
        if self.series_uid is None and not self.dropped:
            self.seen.add(uid)
            if len(self.seen) > 1:  # several image series: nothing will be read without --series
                self._drop_all()
        if self.dropped or (self.series_uid is not None and uid != self.series_uid):
            if "PixelData" in header.ds:
                del header.ds.PixelData
            return
        native = native_plane(header.ds)
        if native is not None:
            dtype, rows, cols, alloc, stored = native
            data = header.ds.PixelData
            if len(data) < rows * cols * dtype.itemsize:
                raise CorruptFileError(f"pixel data is damaged or truncated (ValueError: {len(data)} bytes where "
                                       f"{rows}x{cols} pixels need {rows * cols * dtype.itemsize}); re-export the "
                                       "file", header.path)
            plane = self._slot(uid, dtype, rows, cols, header)
            if stored < alloc and dtype.kind == "i":  # shift while copying: one pass less
                np.left_shift(np.frombuffer(data, dtype, rows * cols).reshape(rows, cols),
                              dtype.type(alloc - stored), out=plane)
                np.right_shift(plane, dtype.type(alloc - stored), out=plane)
            else:
                plane[...] = np.frombuffer(data, dtype, rows * cols).reshape(rows, cols)
                _fix_unused_bits(plane, alloc, stored)
            del header.ds.PixelData  # the plane lives in the buffer now
            return
        compressed = _compressed_plane(header)
        if compressed is None:
            self.kept.append(header)
            return
        plane = self._slot(uid, *compressed, header)
        n = workers(self.capacity, True)
        if n == 1:
            _decode_into(header, plane)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="dicom-decode")
        self._pending.append(self._pool.submit(_decode_into, header, plane))
        while len(self._pending) >= 2 * n:  # bound the encoded bytes held: wait for the oldest (errors surface)
            self._pending.popleft().result()

    def finish(self) -> None:
        """Wait for the decoding threads; the first decoding error is raised here."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _drop_all(self) -> None:
        self.dropped = True
        for fut in self._pending:
            fut.cancel()
        self.close()
        self._pending.clear()
        self.buffers.clear()
        for h in self.kept:
            if "PixelData" in h.ds:
                del h.ds.PixelData
        self.kept.clear()


def _permute_planes(buf: np.ndarray, order: Sequence[int]) -> None:
    """In place: ``buf[k] = old buf[order[k]]`` for k < len(order), one plane of scratch (cycle following)."""
    n = len(order)
    done = np.zeros(n, dtype=bool)
    scratch = np.empty(buf.shape[1:], buf.dtype)
    for start in range(n):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        scratch[...] = buf[start]
        k = start
        while True:
            done[k] = True
            src = order[k]
            if src == start:
                buf[k] = scratch
                break
            buf[k] = buf[src]
            k = src


def _planes_of(header: Header, arr: np.ndarray, frames: Sequence[int | None], shape: tuple[int, int]
               ) -> list[np.ndarray]:
    out = []
    for frame in frames:
        plane = arr[frame] if frame is not None else arr
        if plane.ndim == 3 and frame is None and header.n_frames > 1:
            plane = plane[0]
        if plane.shape[:2] != shape:
            raise CorruptFileError(f"decoded pixels are {plane.shape[1]}x{plane.shape[0]}, the header says "
                                   f"{shape[1]}x{shape[0]}; re-export the file", header.path)
        out.append(plane)
    return out


def assemble(stager: Stager, slices: Sequence[Any], headers: dict[Path, Header], shape: tuple[int, int]
             ) -> np.ndarray:
    """The (k, rows, cols[, c]) stack of stored values in slice order; ``slices`` carry ``.path`` and ``.frame``."""
    stager.finish()
    staged = [headers[s.path].staged for s in slices]
    keys = {st[0] for st in staged if st is not None}
    if len(keys) == 1 and all(st is not None for st in staged):
        buf = stager.buffers[next(iter(keys))]
        _permute_planes(buf, [st[1] for st in staged])  # type: ignore[index]
        return buf[: len(slices)]
    # general path (colour, multi-frame, mixed layouts): each plane written once into a new stack
    by_file: dict[Path, list[tuple[int, int | None]]] = {}
    for k, s in enumerate(slices):
        by_file.setdefault(s.path, []).append((k, s.frame))
    stack: np.ndarray | None = None
    for p, targets in by_file.items():
        h = headers[p]
        if h.staged is not None:
            planes = [stager.buffers[h.staged[0]][h.staged[1]]]
        else:
            planes = _planes_of(h, decode(h), [f for _, f in targets], shape)
        if stack is None:
            stack = np.empty((len(slices),) + planes[0].shape, planes[0].dtype)
        for (k, _), plane in zip(targets, planes):
            if plane.shape != stack.shape[1:] or plane.dtype != stack.dtype:
                raise CorruptFileError(f"decoded pixels are {plane.dtype} {plane.shape}, other slices {stack.dtype} "
                                       f"{stack.shape[1:]}; the series mixes images - re-export it", p)
            stack[k] = plane
        if h.staged is None and "PixelData" in h.ds:
            del h.ds.PixelData  # frees the encoded bytes and pydicom's cached decoded array
    assert stack is not None
    return stack
