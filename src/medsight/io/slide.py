"""One whole-slide reader over OpenSlide (SVS, TIFF, NDPI, MRXS...) and wsidicom (DICOM WSI).

Pathology code asks for pixels by physical resolution (``mpp``, microns per pixel) and never by pyramid level:
the same tile size then covers the same tissue whatever the scanner's pyramid looks like. A slide whose file
states no pixel size is refused with a clear error unless the caller states one (``mpp=``); that choice is kept in
``Slide.mpp_source`` and in every manifest made from the slide.

Backend choice: OpenSlide for the TIFF family (tiling + tile reads ran 1.7-1.8x faster than with tiffslide on our
simulated JPEG pyramids, docs/benchmarks.md "pathology"; tiffslide stays available as ``backend="tiffslide"``),
wsidicom for DICOM files and folders. Every read returns an RGB ``uint8`` array (alpha composited on white), so backends compare pixel by pixel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medsight.errors import CorruptFileError, GeometryError, InputNotFoundError, UnsupportedFormatError
from medsight.io.jpegtiles import row_runs

BACKENDS = ("openslide", "tiffslide", "wsidicom")
_TIFF_FAMILY = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide")


class MissingPixelSizeError(GeometryError):
    """The slide file states no microns per pixel and none was given."""


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels and its downsample from level 0."""

    index: int
    width: int
    height: int
    downsample: float


@dataclass
class Slide:
    """An open whole-slide image. Coordinates are always level-0 pixels (x to the right, y down)."""

    path: Path
    backend: str
    levels: list[Level]
    mpp: float
    mpp_source: str  # "file" or "user"
    objective_power: float | None
    vendor: str
    associated: list[str]
    properties: dict[str, str] = field(repr=False)
    _handle: Any = field(repr=False, default=None)
    _thumb: Any = field(repr=False, default=None)  # the file's thumbnail image, once decoded

    # ------------------------------------------------------------------------------------------------- reading
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.levels[0].width, self.levels[0].height

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) at ``level``, top-left at level-0 pixel (x, y)."""
        if self.backend == "wsidicom":
            lv = self._handle.levels[self.levels[level].index]
            ds = self.levels[level].downsample
            img = self._handle.read_region((int(round(x / ds)), int(round(y / ds))), lv.level, (width, height))
        elif self.backend == "tiffslide":
            arr = self._handle.read_region((x, y), level, (width, height), as_array=True)
            return _to_rgb(arr)
        else:
            img = self._handle.read_region((x, y), level, (width, height))
        return _to_rgb(np.asarray(img))

    def level_for(self, mpp: float) -> tuple[int, float]:
        """The coarsest level at least as fine as ``mpp`` and the remaining scale factor (>= 1)."""
        if mpp <= 0:
            raise GeometryError(f"mpp must be positive, got {mpp}")
        want = mpp / self.mpp
        best = 0
        for lv in self.levels:
            if lv.downsample <= want * (1 + 1e-6):
                best = lv.index if lv.downsample >= self.levels[best].downsample else best
        return best, want / self.levels[best].downsample

    def read_region_mpp(self, x: int, y: int, mpp: float, width: int, height: int) -> np.ndarray:
        """RGB (height, width, 3) at ``mpp`` microns per pixel, top-left at level-0 pixel (x, y).

        Reads the coarsest level that is at least as fine and shrinks with area averaging, so no aliasing and no
        invented detail; at the native resolution of a level the pixels are that level's, unchanged.
        """
        level, scale = self.level_for(mpp)
        if abs(scale - 1) < 1e-6:
            return self.read_region(x, y, level, width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        arr = self.read_region(x, y, level, w, h)
        return np.asarray(Image.fromarray(arr).resize((width, height), Image.Resampling.BOX))

    def read_tiles_mpp(self, boxes: Any, mpp: float, size: int, max_run: int = 4096,
                       fast: bool = False) -> Iterator[np.ndarray]:
        """``read_region_mpp(x, y, mpp, size, size)`` for each level-0 box, in order, with the same pixels, but
        neighbouring boxes of a row are read as one region (up to ``max_run`` level pixels wide) and cut in memory:
        one library call and one decode of each shared JPEG tile instead of one per box.

        ``fast``: where the level is a JPEG-tiled TIFF page and the tiles shrink by >= 2, decode its JPEG tiles
        at 1/2-1/8 scale in the DCT domain instead (``jpegtiles``; a low-pass downscale, not bit-identical)."""
        level, scale = self.level_for(mpp)
        ds = self.levels[level].downsample
        w = max(1, round(size * scale))
        boxes = [(int(b[0]), int(b[1])) for b in boxes]
        if fast and self.backend != "wsidicom" and self.path.is_file():
            from medsight.io.jpegtiles import dct_factor, jpeg_level, read_tiles

            k = dct_factor(scale)
            lv = self.levels[level]
            jl = jpeg_level(self.path, lv.width, lv.height, k) if k > 1 else None
            if jl is not None:
                try:
                    yield from read_tiles(jl, boxes, ds, w, size, k, max_run)
                finally:
                    jl.close()
                return
        for i, j in row_runs(boxes, w, ds, max_run):
            x0, y0 = boxes[i]
            lx0 = round(x0 / ds)
            region = self.read_region(x0, y0, level, round(boxes[j - 1][0] / ds) - lx0 + w, w)
            for x, _ in boxes[i:j]:
                cut = region[:, round(x / ds) - lx0:round(x / ds) - lx0 + w]
                yield cut.copy() if abs(scale - 1) < 1e-6 else \
                    np.asarray(Image.fromarray(cut).resize((size, size), Image.Resampling.BOX))

    def _aligned_thumbnail(self) -> np.ndarray | None:
        """The file's own thumbnail image when it shows exactly level 0 (same aspect within 0.5%): an extra,
        coarse pyramid level that costs one small decode (Aperio SVS stores one; a single-level slide has no
        other). None when absent or not aligned."""
        if "thumbnail" not in self.associated or self.backend == "wsidicom":
            return None
        if self._thumb is None:  # decoded once: the tissue mask and thumbnail.png both start from it
            self._thumb = self.associated_image("thumbnail")
        img = self._thumb
        w, h = self.dimensions
        if abs((img.shape[1] / img.shape[0]) / (w / h) - 1) > 0.005 or img.shape[1] >= w:
            return None
        return img

    def read_downsampled(self, mpp: float, strip: int = 2048) -> np.ndarray:
        """The whole slide at ``mpp`` (coarser than the slide), read in strips so memory stays bounded by the
        output image plus one strip, whatever the size of level 0. When the file's aligned thumbnail is at least
        as fine as ``mpp`` and finer than the coarsest pyramid level that is, it is the source (the right level)."""
        level, scale = self.level_for(mpp)
        thumb = self._aligned_thumbnail() if scale > 1.5 else None
        if thumb is not None and self.mpp * self.dimensions[0] / thumb.shape[1] <= mpp * 1.001:
            lv0 = self.levels[level]
            out_w, out_h = max(1, math.floor(lv0.width / scale)), max(1, math.floor(lv0.height / scale))
            return np.asarray(Image.fromarray(thumb).resize((out_w, out_h), Image.Resampling.BOX))
        level, scale = self.level_for(mpp)
        lv = self.levels[level]
        out_w, out_h = max(1, math.floor(lv.width / scale)), max(1, math.floor(lv.height / scale))
        out = np.empty((out_h, out_w, 3), np.uint8)
        rows = max(1, int(strip / scale))  # output rows per strip
        for r0 in range(0, out_h, rows):
            r1 = min(out_h, r0 + rows)
            src_y0, src_y1 = round(r0 * scale), min(lv.height, round(r1 * scale))
            arr = self.read_region(0, round(src_y0 * lv.downsample), level, lv.width, max(1, src_y1 - src_y0))
            out[r0:r1] = np.asarray(Image.fromarray(arr).resize((out_w, r1 - r0), Image.Resampling.BOX))
        return out

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """RGB thumbnail whose longer side is at most ``max_size`` (a display image: the file's aligned thumbnail
        when its longer side is at least half of ``max_size``, else read from the pyramid at
        ``thumbnail_mpp(max_size)``). Callers take its scale from its shape."""
        thumb = self._aligned_thumbnail()
        if thumb is not None and 2 * max(thumb.shape[:2]) >= max_size:
            if max(thumb.shape[:2]) <= max_size:
                return thumb
            f = max_size / max(thumb.shape[:2])
            return np.asarray(Image.fromarray(thumb).resize((max(1, int(thumb.shape[1] * f)),
                                                             max(1, int(thumb.shape[0] * f))), Image.Resampling.BOX))
        return self.read_downsampled(self.thumbnail_mpp(max_size))

    def thumbnail_mpp(self, max_size: int) -> float:
        w, h = self.dimensions
        return self.mpp * max(1.0, max(w, h) / max_size)

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``thumbnail``, ``label``, ``macro``) as RGB."""
        if name not in self.associated:
            raise InputNotFoundError(f"slide has no associated image {name!r}; it has: "
                                     f"{', '.join(self.associated) or 'none'}", self.path)
        if self.backend == "wsidicom":
            img = self._handle.read_label() if name == "label" else self._handle.read_overview()
        else:
            img = self._handle.associated_images[name]
        return _to_rgb(np.asarray(img))

    def describe(self) -> dict[str, Any]:
        """Everything ``medsight info`` prints about a slide (JSON-ready)."""
        return {
            "path": str(self.path), "kind": "whole-slide image", "backend": self.backend, "vendor": self.vendor,
            "dimensions": list(self.dimensions), "mpp": self.mpp, "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "levels": [{"level": lv.index, "width": lv.width, "height": lv.height, "downsample": round(lv.downsample, 4),
                        "mpp": round(self.mpp * lv.downsample, 4)} for lv in self.levels],
            "associated_images": self.associated,
        }

    # --------------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """RGB uint8 from RGB/RGBA/grey; transparent pixels (outside scanned areas) become white as in viewers."""
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        if arr[..., 3].min() == 255:  # fully opaque (nearly every tissue read): no compositing arithmetic
            return np.ascontiguousarray(arr[..., :3])
        alpha = arr[..., 3:4].astype(np.uint16)
        rgb = (arr[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)) // 255
        return rgb.astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3], dtype=np.uint8)


WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage


def is_dicom_slide(path: Path) -> bool:
    """A DICOM WSI file, or a folder whose first DICOM file is one: read from the file meta's Media Storage SOP
    Class UID only (group 0002), so `medsight info` on a CT series still parses each header once (io/dicom)."""
    from pydicom.filereader import read_file_meta_info

    files = sorted(p for p in path.iterdir() if p.is_file())[:8] if path.is_dir() else [path]
    for f in files:
        try:
            with open(f, "rb") as fh:
                if fh.read(132)[128:132] != b"DICM":
                    continue
            meta = read_file_meta_info(f)
        except Exception:  # noqa: BLE001 - unreadable file: not a slide
            continue
        return str(meta.get("MediaStorageSOPClassUID", "")) == WSI_SOP_CLASS
    return False


def is_slide_path(path: str | Path) -> bool:
    """True for a file with a whole-slide suffix or a DICOM WSI; cheap (no decoding)."""
    path = Path(path)
    if path.suffix.lower() in _TIFF_FAMILY:
        if path.suffix.lower() not in (".tif", ".tiff"):
            return True
        try:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                return len(tf.pages) > 1 or tf.pages[0].is_tiled
        except Exception:  # noqa: BLE001 - not a TIFF we can tell about: not a slide
            return False
    return path.exists() and (path.is_dir() or path.suffix.lower() in ("", ".dcm")) and is_dicom_slide(path)


def open_slide(path: str | Path, mpp: float | None = None, backend: str | None = None) -> Slide:
    """Open a whole-slide image. ``mpp`` overrides/supplies the pixel size (recorded as ``mpp_source="user"``)."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError("slide not found", path)
    if backend is not None and backend not in BACKENDS:
        raise UnsupportedFormatError(f"unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
        raise GeometryError(f"--mpp must be a positive number of microns per pixel, got {mpp}")
    if backend == "wsidicom" or (backend is None and is_dicom_slide(path)):
        return _open_dicom(path, mpp)
    return _open_tiff_family(path, mpp, backend or "openslide")


def _resolve_mpp(found: float | None, given: float | None, path: Path) -> tuple[float, str]:
    if given is not None:
        return float(given), "user"
    if found is None or not (found > 0 and math.isfinite(found)):
        raise MissingPixelSizeError(
            "slide states no pixel size (microns per pixel); pass --mpp with the scanner's value, e.g. --mpp 0.25 "
            "for 40x or 0.5 for 20x", path)
    return float(found), "file"


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _mpp_from_tiff_tags(props: dict[str, str]) -> float | None:
    """Microns per pixel from TIFF resolution tags (OpenSlide leaves them raw for some generic TIFFs)."""
    res, unit = _float(props.get("tiff.XResolution")), props.get("tiff.ResolutionUnit", "").lower()
    if res is None:
        return None
    if unit in ("centimeter", "3"):
        return 1e4 / res
    if unit in ("inch", "2"):
        return 25400 / res
    return None


def _open_tiff_family(path: Path, mpp: float | None, backend: str) -> Slide:
    try:
        if backend == "tiffslide":
            import tiffslide

            handle = tiffslide.TiffSlide(path)
            prefix = "tiffslide"
        else:
            import openslide

            handle = openslide.OpenSlide(str(path))
            prefix = "openslide"
    except Exception as err:  # both libraries raise their own types for unreadable files
        raise UnsupportedFormatError(f"not a whole-slide image {backend} can read ({type(err).__name__}: {err}); "
                                     "supported: SVS, TIFF pyramids, NDPI, MRXS, SCN and DICOM WSI", path) from err
    props = {str(k): str(v) for k, v in handle.properties.items()}
    found = _float(props.get(f"{prefix}.mpp-x")) or _mpp_from_tiff_tags(props)
    value, source = _resolve_mpp(found, mpp, path)
    levels = [Level(i, int(w), int(h), float(d)) for i, ((w, h), d)
              in enumerate(zip(handle.level_dimensions, handle.level_downsamples))]
    if not levels or levels[0].width < 1:
        raise CorruptFileError("slide has no image levels", path)
    return Slide(path, backend, levels, value, source, _float(props.get(f"{prefix}.objective-power")),
                 props.get(f"{prefix}.vendor", "") or "generic-tiff", sorted(handle.associated_images), props,
                 handle)


def _open_dicom(path: Path, mpp: float | None) -> Slide:
    try:
        from wsidicom import WsiDicom

        handle = WsiDicom.open(path)
    except Exception as err:  # wsidicom raises many types for incomplete series
        raise UnsupportedFormatError(f"not a DICOM whole-slide image wsidicom can read ({type(err).__name__}: "
                                     f"{err}); give the folder holding all instances of the slide", path) from err
    base = handle.levels[0]
    found = None
    if base.mpp is not None:
        found = _float(base.mpp.width)
    value, source = _resolve_mpp(found, mpp, path)
    levels = []
    for i, lv in enumerate(handle.levels):
        levels.append(Level(i, int(lv.size.width), int(lv.size.height), base.size.width / lv.size.width))
    associated = (["label"] if handle.labels else []) + (["macro"] if handle.overviews else [])
    props = {"dicom.manufacturer": str(getattr(handle.metadata.equipment, "manufacturer", "") or "")}
    return Slide(path, "wsidicom", levels, value, source, None, props["dicom.manufacturer"] or "dicom",
                 associated, props, handle)
