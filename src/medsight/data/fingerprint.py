"""Dataset fingerprint: what the planner needs to configure training without hand tuning.

Per case: shape and spacing; per channel: intensity percentiles, mean and std over foreground voxels (a fixed,
seeded sample, as nnU-Net does, so the fingerprint is deterministic); per class: volume in ml.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

from medsight.data.dataset import SegDataset, header_geometry

SAMPLES_PER_CASE = 10_000


def compute_fingerprint(ds: SegDataset, seed: int = 0, quiet: bool = True) -> dict[str, Any]:
    """A JSON-ready dict: shapes, spacings, per-channel foreground intensity statistics, class volumes."""
    shapes, spacings, volumes = [], [], {name: [] for name in ds.foreground.values()}
    samples: dict[int, list[np.ndarray]] = {c: [] for c in ds.channels}
    cases = ds.cases
    if not quiet:
        from tqdm import tqdm

        cases = tqdm(cases, desc="fingerprint", unit="case", leave=False)
    for n, case in enumerate(cases):
        shape, geom = header_geometry(case.images[0])
        shapes.append(list(shape))
        spacings.append([round(float(s), 6) for s in geom.spacing])
        voxel_ml = float(np.prod(geom.spacing)) / 1000.0
        if case.label is not None:
            label = np.asanyarray(nib.load(str(case.label)).dataobj).astype(np.int16)
            fg = label > 0
            for value, name in ds.foreground.items():
                volumes[name].append(float((label == value).sum()) * voxel_ml)
        else:
            fg = None
        rng = np.random.default_rng([seed, n])
        for ch, path in zip(sorted(ds.channels), case.images):
            data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            vals = data[fg] if fg is not None and fg.any() else data.ravel()
            if vals.size > SAMPLES_PER_CASE:
                vals = rng.choice(vals, SAMPLES_PER_CASE, replace=False)
            samples[ch].append(vals)
    intensity = {}
    for ch, parts in samples.items():
        v = np.concatenate(parts).astype(np.float64)
        p = np.percentile(v, [0.5, 50, 99.5])
        intensity[str(ch)] = {"name": ds.channels[ch], "mean": float(v.mean()), "std": float(v.std()),
                              "p00_5": float(p[0]), "median": float(p[1]), "p99_5": float(p[2])}
    return {
        "dataset": ds.name,
        "n_cases": len(ds.cases),
        "case_ids": [c.case_id for c in ds.cases],
        "shapes": shapes,
        "spacings": spacings,
        "median_shape": [float(v) for v in np.median(np.asarray(shapes), axis=0)],
        "median_spacing": [float(v) for v in np.median(np.asarray(spacings), axis=0)],
        "channels": {str(k): v for k, v in ds.channels.items()},
        "labels": ds.labels,
        "intensity": intensity,
        "class_volume_ml": {k: {"median": float(np.median(v)) if v else 0.0, "min": float(min(v)) if v else 0.0,
                                "max": float(max(v)) if v else 0.0} for k, v in volumes.items()},
    }
