"""The unlabelled pool: every image volume under a folder, read through medsight io and preprocessed by the plan.

A folder in the MSD / nnU-Net layout (``dataset.json`` beside ``imagesTr``) contributes its images only (labels are
never read, so a labelled dataset can serve as an unlabelled pool). Any other folder contributes every NIfTI file
and every folder holding a DICOM series, found recursively. Each volume is normalised and resampled exactly as the
plan's configuration will do for fine-tuning, so the encoder sees the intensities and grid it will later see.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from medsight.data.preprocess import preprocess_image
from medsight.errors import ConfigError, InputNotFoundError, MedsightError
from medsight.io import RASTER_SUFFIXES, read_image
from medsight.plan.plan import ConfigPlan, Plan

log = logging.getLogger(__name__)
NIFTI = (".nii", ".nii.gz")
FILES = NIFTI + RASTER_SUFFIXES  # images read one file each; any other file is taken for a DICOM series' slice


def find_volumes(root: str | Path) -> list[Path]:
    """Image files (NIfTI, PNG/JPEG/TIFF) and DICOM series folders under ``root`` (sorted; labels of an MSD
    dataset left out)."""
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError("no such folder of unlabelled images", root)
    if root.is_file():
        return [root]
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        found = [p for d in ("imagesTr", "imagesTs") if (root / d).is_dir()
                 for p in sorted((root / d).iterdir()) if p.name.endswith(NIFTI)]
    else:
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(FILES))
        nifti_dirs = {p.parent for p in found}
        for d in sorted({p.parent for p in root.rglob("*") if p.is_file() and not p.name.lower().endswith(FILES)
                         and not p.name.endswith((".json", ".csv", ".txt", ".md"))}):
            if d not in nifti_dirs:
                found.append(d)
    if not found:
        raise InputNotFoundError("no NIfTI, PNG/JPEG or DICOM series found for pretraining", root)
    return found


def pool_fingerprint(paths: list[Path]) -> str:
    """SHA-256 over the volumes' names and sizes: which pool an encoder (and a checkpoint) came from."""
    h = hashlib.sha256()
    for p in paths:
        size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        h.update(f"{p.name}\0{size}\n".encode())
    return h.hexdigest()


def load_pool(paths: list[Path], plan: Plan, cfg: ConfigPlan, quiet: bool = True) -> list[np.ndarray]:
    """Preprocessed (C, *S) volumes; a file that cannot be read is skipped with a warning (a pool is messy)."""
    if len(plan.channels) != 1:
        raise ConfigError(f"pretraining reads single-channel volumes; the plan has {len(plan.channels)} channels")
    out = []
    for p in paths:
        try:
            img = read_image(p)
        except MedsightError as err:
            log.warning("skipped %s: %s", p, err)
            continue
        if np.asarray(img.array).ndim != 3:
            log.warning("skipped %s: not a 3D volume (shape %s)", p, np.asarray(img.array).shape)
            continue
        out.append(preprocess_image(img, plan, cfg).image)
    if not out:
        raise InputNotFoundError("none of the pool's volumes could be read", paths[0].parent)
    return out
