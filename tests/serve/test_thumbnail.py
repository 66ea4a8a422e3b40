"""Outlines only where the model reports a finding: a study without one gets the heat, never a red outline."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image as PILImage

from medsight.explain.evidence import evidence_thumbnail
from medsight.image import Geometry, Image
from medsight.serve.runner import _write_thumbnail


def _red(png: bytes) -> int:
    rgb = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 100)).sum())  # the outline: (228, 41, 76)


def _png(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


def test_no_finding_no_outline(tmp_path):
    image = Image(np.full((40, 40, 12), 100.0, np.float32), Geometry.identity(3))
    heat = np.zeros((40, 40, 12), np.float32)
    heat[15:25, 15:25, 4:8] = 0.4  # a weak bump: no lesion found
    _write_thumbnail(tmp_path / "none.png", image, heat, np.zeros_like(heat, bool))
    no_finding = (tmp_path / "none.png").read_bytes()
    outlined = _png(evidence_thumbnail(image, heat=heat, long_side=256))  # what the service drew before
    assert no_finding == _png(evidence_thumbnail(image, heat=heat, long_side=256, outline_peak=False))
    assert _red(outlined) > _red(no_finding)
    mask = heat > 0.3  # the model reports a finding: it is outlined
    _write_thumbnail(tmp_path / "found.png", image, heat, mask)
    assert _red((tmp_path / "found.png").read_bytes()) > _red(no_finding)
