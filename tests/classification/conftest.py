"""Small synthetic classification datasets written as real files (one-slice NIfTI), with manifests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti


def write_square_dataset(root: Path, n: int = 160, size: int = 48, side: int = 10, seed: int = 0,
                         second_label: bool = False) -> tuple[Path, list[tuple[int, int]]]:
    """Noise images; label 1 images carry a bright square at a random place. Returns manifest and corners."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, corners = [], []
    for i in range(n):
        a = rng.normal(100.0, 10.0, (size, size)).astype(np.float32)
        lab = i % 2
        ci, cj = (int(v) for v in rng.integers(2, size - side - 2, 2))
        if lab:
            a[ci:ci + side, cj:cj + side] += 60.0
        corners.append((ci, cj))
        path = root / f"img{i:03d}.nii.gz"
        write_nifti(Image(a[:, :, None], Geometry.identity(3)), path, sidecar=False)
        row = {"image": path.name, "patient_id": f"P{i // 2:03d}", "site": "s1", "square": lab}
        if second_label:
            row["left_half"] = int(lab and ci < size // 2 - side // 2)
        rows.append(row)
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest, corners


@pytest.fixture(scope="session")
def square_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    return write_square_dataset(tmp_path_factory.mktemp("squares"), second_label=True)


@pytest.fixture(scope="session")
def make_squares():  # noqa: ANN201 - returns write_square_dataset for tests that need fresh images
    return write_square_dataset
