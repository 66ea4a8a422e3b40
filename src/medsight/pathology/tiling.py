"""Tiles at a physical resolution, kept where there is tissue, recorded in a verifiable tiling manifest.

A tiling is the slide's SHA-256, the parameters (tile mpp, size, overlap, minimum tissue fraction, mask mpp) and
the level-0 boxes; ``tiling_hash`` is the SHA-256 of exactly those, in canonical JSON, so the same slide and
parameters give the same hash on any machine and features can say which tiling they belong to. Only
coordinates are stored (pixels are read again when needed), the tissue mask is bounded in size, and boxes are
generated row by row, so memory does not grow with the number of pixels in the slide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight import __version__
from medsight.errors import ConfigError, DatasetError, InputNotFoundError
from medsight.files import atomic_write_text, sha256_file
from medsight.io.slide import Slide, open_slide
from medsight.pathology.tissue import MASK_MPP, TissueMask, detect_tissue

log = logging.getLogger(__name__)

FORMAT, VERSION = "medsight-tiling", 1
MANIFEST = "tiles.json"


@dataclass(frozen=True)
class TilingParams:
    """What decides a tiling: tile size in pixels at ``mpp``, overlap in those pixels, tissue floor, mask mpp."""

    mpp: float = 1.0
    size: int = 224
    overlap: int = 0
    min_tissue: float = 0.5
    mask_mpp: float = MASK_MPP

    def check(self) -> None:
        if not (self.mpp > 0 and math.isfinite(self.mpp)):
            raise ConfigError(f"tile mpp must be a positive number, got {self.mpp}")
        if self.size < 8:
            raise ConfigError(f"tile size must be at least 8 pixels, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ConfigError(f"overlap must lie in [0, tile size), got {self.overlap} for size {self.size}")
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError(f"minimum tissue fraction must lie in [0, 1], got {self.min_tissue}")


@dataclass
class Tiling:
    """The tiles of one slide: level-0 boxes (x, y, w, h) and the tissue share of each."""

    slide: dict[str, Any]
    params: TilingParams
    boxes: np.ndarray  # (n, 4) int64 level-0 x, y, w, h
    tissue: np.ndarray  # (n,) float
    tissue_threshold: float
    tissue_fraction: float

    @property
    def tiling_hash(self) -> str:
        return tiling_hash(self.slide["sha256"], self.params, self.boxes)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "medsight_version": __version__, "slide": self.slide,
                "params": asdict(self.params), "tiling_hash": self.tiling_hash, "n_tiles": int(len(self.boxes)),
                "tissue": {"threshold": round(self.tissue_threshold, 6), "fraction": round(self.tissue_fraction, 6)},
                "columns": ["x", "y", "w", "h", "tissue"],
                "tiles": [[*map(int, b), round(float(t), 4)] for b, t in zip(self.boxes, self.tissue)]}

    def save(self, path: str | Path) -> Path:
        """Write the manifest; the slide is recorded by absolute path and by path relative to the manifest's
        folder, so later steps find it from any working directory, and after slides and tiles move together."""
        d = self.to_dict()
        slide_abs = Path(d["slide"]["path"]).resolve()
        d["slide"] = {**d["slide"], "path": str(slide_abs),
                      "relative_path": os.path.relpath(slide_abs, Path(path).resolve().parent)}
        atomic_write_text(path, json.dumps(d, separators=(",", ":")))
        return Path(path)


def tiling_hash(slide_sha256: str, params: TilingParams, boxes: np.ndarray) -> str:
    """SHA-256 over the slide hash, the parameters and the boxes (canonical JSON, so stable across machines)."""
    body = json.dumps({"slide_sha256": slide_sha256, "params": asdict(params),
                       "boxes": np.asarray(boxes, dtype=np.int64).tolist()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def slide_sha256(path: str | Path) -> str:
    """SHA-256 of a slide file, or of a DICOM/MRXS folder (its files' names and hashes, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def slide_record(slide: Slide, sha: str | None = None) -> dict[str, Any]:
    return {"path": str(slide.path), "name": slide.path.name, "sha256": sha or slide_sha256(slide.path),
            "mpp": slide.mpp, "mpp_source": slide.mpp_source, "dimensions": list(slide.dimensions),
            "backend": slide.backend}


def grid_boxes(width: int, height: int, slide_mpp: float, params: TilingParams) -> Iterator[tuple[int, int, int, int]]:
    """Full tiles on a regular grid, row by row (level-0 x, y, w, h); partial edge tiles are left out."""
    f = params.mpp / slide_mpp
    size0 = params.size * f
    stride0 = (params.size - params.overlap) * f
    w0 = max(1, round(size0))
    ny = int(math.floor((height - size0) / stride0)) + 1 if height >= size0 else 0
    nx = int(math.floor((width - size0) / stride0)) + 1 if width >= size0 else 0
    for j in range(ny):
        y = round(j * stride0)
        for i in range(nx):
            yield round(i * stride0), y, w0, w0


def tile_slide(slide: Slide, params: TilingParams, sha: str | None = None,
               mask: TissueMask | None = None) -> tuple[Tiling, TissueMask]:
    """The tiling of an open slide, and the tissue mask it was filtered with."""
    params.check()
    if params.mpp < slide.mpp * 0.999:
        raise ConfigError(f"tile mpp {params.mpp} is finer than the slide's {slide.mpp:.4g} um/px; tiles would be "
                          "upsampled, choose --mpp at or above the slide's", slide.path)
    mask = mask or detect_tissue(slide, params.mask_mpp)
    w, h = slide.dimensions
    boxes, tissue = [], []
    for box in grid_boxes(w, h, slide.mpp, params):
        frac = mask.fraction(*box)
        if frac >= params.min_tissue and frac > 0:
            boxes.append(box)
            tissue.append(frac)
    arr = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return Tiling(slide_record(slide, sha), params, arr, np.asarray(tissue), mask.threshold,
                  mask.fraction_total), mask


def load_tiling(path: str | Path) -> Tiling:
    """Read a tiling manifest and check that its hash matches its content."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"not a readable tiling manifest ({err}); run `medsight wsi tile` first", path) from err
    if d.get("format") != FORMAT:
        raise DatasetError("not a medsight tiling manifest (format field missing)", path)
    tiles = np.asarray(d["tiles"], dtype=np.float64).reshape(-1, 5)
    t = Tiling(d["slide"], TilingParams(**d["params"]), tiles[:, :4].astype(np.int64), tiles[:, 4],
               d["tissue"]["threshold"], d["tissue"]["fraction"])
    if t.tiling_hash != d["tiling_hash"]:
        raise DatasetError("tiling manifest was edited: its tiles no longer match its tiling_hash; tile again", path)
    return t


def locate_slide(tiling: Tiling, manifest: str | Path) -> Path:
    """The slide file a tiling was made from: its recorded path, else the path recorded relative to the manifest."""
    rec = tiling.slide
    candidates = [Path(rec["path"])]
    if rec.get("relative_path"):
        candidates.append((Path(manifest).resolve().parent / rec["relative_path"]).resolve())
    for c in candidates:
        if c.exists():
            return c
    raise InputNotFoundError(f"the slide this tiling was made from ({rec.get('name')}) is neither at {rec['path']} "
                             "nor where it was relative to the tiles; put it back or tile it again", manifest)


def slide_id(path: Path, taken: set[str]) -> str:
    """A folder-safe name for a slide's outputs (its file stem; a short path hash when two stems collide)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name.split(".")[0] if path.is_file() else path.name) or "slide"
    if stem in taken:
        stem = f"{stem}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    taken.add(stem)
    return stem


def tile_slides(paths: Sequence[str | Path], out_dir: str | Path, params: TilingParams, mpp: float | None = None,
                progress: bool = True) -> list[dict[str, Any]]:
    """Tile many slides into ``out_dir/<slide id>/``; a slide whose manifest already matches is skipped (resume).

    Returns one summary row per slide (id, path, n_tiles, tiling_hash, status "tiled" / "resumed").
    """
    from tqdm import tqdm

    from medsight.pathology.evidence import save_tissue_outputs

    out_dir = Path(out_dir)
    taken: set[str] = set()
    rows = []
    for p in tqdm([Path(p) for p in paths], desc="tiling", unit="slide", disable=not progress):
        sid = slide_id(p, taken)
        manifest = out_dir / sid / MANIFEST
        sha = slide_sha256(p)
        if manifest.exists():
            try:
                old = load_tiling(manifest)
            except DatasetError:
                old = None
            if old is not None and old.slide["sha256"] == sha and old.params == params and (
                    mpp is None or old.slide["mpp"] == mpp):
                rows.append({"id": sid, "path": str(p), "n_tiles": len(old.boxes), "tiling_hash": old.tiling_hash,
                             "status": "resumed"})
                continue
        with open_slide(p, mpp=mpp) as slide:
            tiling, mask = tile_slide(slide, params, sha)
            save_tissue_outputs(slide, tiling, mask, out_dir / sid)
        tiling.save(manifest)
        log.info("%s: %d tiles, tiling_hash %s", sid, len(tiling.boxes), tiling.tiling_hash[:16])
        rows.append({"id": sid, "path": str(p), "n_tiles": len(tiling.boxes), "tiling_hash": tiling.tiling_hash,
                     "status": "tiled"})
    return rows
