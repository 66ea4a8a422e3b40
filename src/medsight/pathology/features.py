"""Tile features for every tile of a tiling, with decoding overlapped with the encoder's forward pass.

A reader thread reads and decodes the next batches (OpenSlide and imagecodecs release the GIL) while the main
thread runs the encoder, so on a machine where the forward pass dominates the pipeline runs at nearly the
encoder's own speed (docs/benchmarks.md "pathology"). Features are stored per slide in ``features.npz`` with the
tiling hash, the slide hash and the encoder's provenance (weights SHA-256); a later run with the same tiling and
weights skips the slide.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.errors import DatasetError, IntegrityError
from medsight.files import atomic_write_with
from medsight.io.slide import Slide, open_slide
from medsight.nets.encoders import Encoder
from medsight.pathology.tiling import MANIFEST, Tiling, load_tiling, locate_slide, slide_sha256

log = logging.getLogger(__name__)

FEATURES = "features.npz"
_DONE = object()


@dataclass
class SlideFeatures:
    """Features of one slide: (n, D) float32 rows in the order of ``boxes``."""

    features: np.ndarray
    boxes: np.ndarray
    tiling_hash: str
    slide_sha256: str
    encoder: dict[str, Any]
    tile_mpp: float
    tile_size: int

    def save(self, path: str | Path) -> Path:
        meta = json.dumps({"tiling_hash": self.tiling_hash, "slide_sha256": self.slide_sha256,
                           "encoder": self.encoder, "tile_mpp": self.tile_mpp, "tile_size": self.tile_size})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, features=self.features.astype(np.float32), boxes=self.boxes.astype(np.int64),
                         meta=np.frombuffer(meta.encode(), dtype=np.uint8))
        atomic_write_with(path, write, suffix=".npz")
        return Path(path)


def load_features(path: str | Path) -> SlideFeatures:
    path = Path(path)
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            return SlideFeatures(z["features"], z["boxes"], meta["tiling_hash"], meta["slide_sha256"],
                                 meta["encoder"], float(meta["tile_mpp"]), int(meta["tile_size"]))
    except (OSError, KeyError, ValueError) as err:
        raise DatasetError(f"not a readable features file ({err}); run `medsight wsi features` again", path) from err


def iter_tile_batches(slide: Slide, tiling: Tiling, batch: int) -> Iterator[np.ndarray]:
    """(b, size, size, 3) uint8 batches of the tiling's tiles, in order, at the tiling's mpp."""
    p = tiling.params
    # neighbours read as one region, cut in memory; JPEG tiles decoded at 1/2-1/8 scale where the tiles shrink
    tiles = slide.read_tiles_mpp(tiling.boxes, p.mpp, p.size, fast=True)
    for i in range(0, len(tiling.boxes), batch):
        yield np.stack([next(tiles) for _ in tiling.boxes[i:i + batch]])


def _prefetch(it: Iterator[np.ndarray], depth: int) -> Iterator[np.ndarray]:
    """Run ``it`` in a reader thread, ``depth`` batches ahead; errors are re-raised in the caller."""
    q: queue.Queue = queue.Queue(maxsize=depth)

    def work() -> None:
        try:
            for item in it:
                q.put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            q.put(err)
        q.put(_DONE)

    t = threading.Thread(target=work, daemon=True, name="tile-reader")
    t.start()
    while (item := q.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


def encoder_forward(encoder: Encoder, example: torch.Tensor, runtime: str = "auto") -> Callable[[torch.Tensor],
                                                                                              torch.Tensor]:
    """The encoder's forward for inputs shaped like ``example``: ONNX Runtime when its features equal PyTorch's
    within 1e-4 on ``example`` ("auto"; EfficientNet-Lite0: ~5x the tiles per CPU second, docs/benchmarks.md
    "pathology"), else PyTorch. Chosen once per encoder and input size (the export costs ~1 s)."""
    from medsight.segmentation.runtime import choose_runtime

    cache = encoder.__dict__.setdefault("_forwards", {})
    key = (runtime, tuple(example.shape[1:]))
    if key not in cache:
        fn, record = choose_runtime(encoder.module.eval(), example[:2], runtime)
        log.info("features engine: %s (%s)", record["runtime"], record.get("reason", ""))
        cache[key] = (fn, record)
    return cache[key][0]


def encode_batches(encoder: Encoder, batches: Iterator[np.ndarray], runtime: str = "auto") -> np.ndarray:
    """Features of every tile of ``batches`` (resized to the encoder's input size if it has a fixed one)."""
    out = []
    for tiles in batches:
        x = encoder.preprocess(tiles)
        if encoder.fixed_size and x.shape[-1] != encoder.input_size:
            x = torch.nn.functional.interpolate(x, size=(encoder.input_size,) * 2, mode="bilinear",
                                                antialias=True, align_corners=False)
        out.append(encoder_forward(encoder, x, runtime)(x).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def extract_slide(slide: Slide, tiling: Tiling, encoder: Encoder, batch: int = 32, prefetch: int = 3
                  ) -> SlideFeatures:
    """Features of every tile of ``tiling`` (the slide must be the one it was made from)."""
    batches = iter_tile_batches(slide, tiling, batch)
    feats = encode_batches(encoder, _prefetch(batches, prefetch) if prefetch > 0 else batches)
    return SlideFeatures(feats, tiling.boxes, tiling.tiling_hash, tiling.slide["sha256"], encoder.provenance,
                         tiling.params.mpp, tiling.params.size)


def extract_dir(tiles_dir: str | Path, encoder: Encoder, out_dir: str | Path | None = None, batch: int = 32,
                progress: bool = True, verify: bool = True) -> list[dict[str, Any]]:
    """Features for every slide tiled under ``tiles_dir`` (``<id>/tiles.json``); resumes finished slides."""
    from tqdm import tqdm

    tiles_dir = Path(tiles_dir)
    out_dir = Path(out_dir) if out_dir else tiles_dir
    manifests = sorted(tiles_dir.glob(f"*/{MANIFEST}"))
    if not manifests:
        raise DatasetError(f"no */{MANIFEST} under this folder; run `medsight wsi tile SLIDE... --out DIR` first",
                           tiles_dir)
    rows = []
    for m in tqdm(manifests, desc="features", unit="slide", disable=not progress):
        sid = m.parent.name
        tiling = load_tiling(m)
        target = out_dir / sid / FEATURES
        if target.exists():
            try:
                old = load_features(target)
            except DatasetError:
                old = None
            if old is not None and old.tiling_hash == tiling.tiling_hash and \
                    old.encoder.get("weights_sha256") == encoder.provenance.get("weights_sha256"):
                rows.append({"id": sid, "n_tiles": len(old.boxes), "status": "resumed"})
                continue
        path = locate_slide(tiling, m)
        if verify and slide_sha256(path) != tiling.slide["sha256"]:
            raise IntegrityError("slide changed since it was tiled (SHA-256 differs); tile it again", path)
        with open_slide(path, mpp=tiling.slide["mpp"] if tiling.slide["mpp_source"] == "user" else None) as slide:
            feats = extract_slide(slide, tiling, encoder, batch)
        feats.save(target)
        rows.append({"id": sid, "n_tiles": len(feats.boxes), "status": "extracted"})
    return rows
