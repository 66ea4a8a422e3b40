"""A tiny synthetic dataset in the MSD / nnU-Net layout (two channels, two structures), for tests and smoke runs.

Small enough to plan, train and predict in seconds on a CPU; each case is a noisy box holding a bright ball
(label 1) and a dimmer slab (label 2). Geometry varies per case (spacing, origin, a rotated direction) so that
resampling and geometry round trips are exercised, not assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medsight.files import atomic_write_text
from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti

TOY_LABELS = {"background": 0, "ball": 1, "slab": 2}


def make_toy_dataset(root: str | Path, n_cases: int = 6, shape: tuple[int, int, int] = (24, 20, 16), seed: int = 0,
                     channels: int = 2, manifest: bool = True) -> Path:
    """Write ``n_cases`` cases (patients share scans: case k belongs to patient k // 2) and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = ["case_id,image,label,patient_id,site"]
    for k in range(n_cases):
        cid = f"toy_{k:03d}"
        spacing = (1.5 * rng.uniform(0.9, 1.1), 1.5, 2.0)
        geom = Geometry(spacing, (float(rng.uniform(-50, 50)), -20.0, 10.0), _direction(rng.uniform(-0.3, 0.3)))
        label = np.zeros(shape, dtype=np.uint8)
        idx = np.indices(shape).astype(float)
        c = np.asarray(shape) / 2 + rng.uniform(-3, 3, 3)
        ball = sum(((idx[a] - c[a]) * spacing[a]) ** 2 for a in range(3)) < (rng.uniform(5, 8)) ** 2
        z0 = int(rng.integers(2, shape[2] // 3))
        label[:, :, z0:z0 + 3] = 2
        label[ball] = 1
        paths = []
        for ch in range(channels):
            gain = 1.0 + ch
            img = rng.normal(0, 0.15, shape) + gain * (label == 1) + 0.5 * gain * (label == 2)
            img = (img * 100 + 300).astype(np.float32)
            rel = f"imagesTr/{cid}_{ch:04d}.nii.gz"
            write_nifti(Image(img, geom), root / rel, sidecar=False)
            paths.append(rel)
        write_nifti(Image(label, geom), root / f"labelsTr/{cid}.nii.gz", sidecar=False)
        rows.append(f"{cid},{';'.join(paths)},labelsTr/{cid}.nii.gz,patient_{k // 2},site_{'AB'[k % 2]}")
    meta = {"name": "Toy", "channel_names": {str(c): ("T1", "T2")[c % 2] for c in range(channels)},
            "labels": TOY_LABELS, "numTraining": n_cases, "file_ending": ".nii.gz"}
    atomic_write_text(root / "dataset.json", json.dumps(meta, indent=1))
    if manifest:
        atomic_write_text(root / "manifest.csv", "\n".join(rows) + "\n")
    return root


def _direction(angle: float) -> tuple[tuple[float, ...], ...]:
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))
