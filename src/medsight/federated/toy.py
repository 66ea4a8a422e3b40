"""Small synthetic sites for tests and the benchmark: 2D images with a bright disc (label 1) or none (label 0);
the background level differs per site (a scanner shift), so sites are not identically distributed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_sites(root: Path, n: int = 40, sites: tuple[str, ...] = ("A", "B", "C"), seed: int = 0,
               contrast: float = 60.0) -> dict[str, Path]:
    """One folder and manifest.csv per site (rows of that site only), 30% of patients marked split=test."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    out = {}
    for s_i, site in enumerate(sites):
        d = root / f"site_{site}"
        d.mkdir(parents=True)
        lines = ["image,patient_id,site,split,lesion"]
        for i in range(n):
            y = i % 2
            img = rng.normal(80 + 20 * s_i, 12, (32, 32))
            if y:
                cy, cx = rng.integers(8, 24, 2)
                img += contrast * (((yy - cy) ** 2 + (xx - cx) ** 2) < 16)
            name = f"img{i:03d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / name)
            split = "test" if i >= int(n * 0.7) else "train"
            lines.append(f"{name},{site}-p{i:03d},{site},{split},{y}")
        (d / "manifest.csv").write_text("\n".join(lines) + "\n")
        out[site] = d / "manifest.csv"
    return out
