"""The whole-layer evaluation on a tiny model with known behaviour, and the demo stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsight.image import Geometry, Image
from medsight.safety.evaluate import evaluate_classifier_safety


class _Bundle:
    """Features = 4 image statistics; logit = 25 x (left-half mean - right-half mean); the Bayes logit is 6.4 x, so over-confident."""

    config = {"labels": ["left_brighter"], "activation": "sigmoid", "thresholds": {"left_brighter": 0.5},
              "spatial_dims": 2}
    model = torch.nn.Identity()

    def preprocess(self, image: Image) -> torch.Tensor:
        return torch.as_tensor(image.array, dtype=torch.float64)[None]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left, right = x[..., :4, :].mean((-1, -2, -3)), x[..., 4:, :].mean((-1, -2, -3))
        f = torch.stack([left, right, x.std((-1, -2, -3)), x.mean((-1, -2, -3))], 1)
        return (25 * (left - right))[:, None], f


def _set(n: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> tuple[list[Image], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    imgs = []
    for label in y:
        a = rng.normal(0, 1, (8, 8)) * scale + shift
        a[:4] += 0.2 if label else -0.2
        imgs.append(Image(a, Geometry.identity(2)))
    return imgs, y[:, None]


def test_evaluation_calibrates_detects_and_refers() -> None:
    res = evaluate_classifier_safety(_Bundle(), _set(300, 0), _set(300, 1), {"held_out": _set(300, 2)},
                                     {"shifted": _set(100, 3, shift=8.0)[0], "noisy": _set(100, 4, scale=6.0)[0]},
                                     "held_out")
    cal = res["calibration"]["held_out"]
    assert res["temperature"]["left_brighter"] == pytest.approx(25 / 6.4, rel=0.25)  # the Bayes-optimal cooling
    assert cal["ece_after"] < cal["ece_before"]
    for s in ("shifted", "noisy"):
        assert res["ood"][s]["mahalanobis"]["auroc"] > 0.99
        assert res["referral"][s]["kept"] < 0.1
    assert 0.9 <= res["referral"]["held_out"]["kept"] <= 1.0
    rc = res["risk_coverage"]["held_out"]
    assert rc["error_at_80"] < rc["error_at_100"]


@pytest.mark.slow
def test_demo_stage_fast(tmp_path) -> None:
    from medsight.demo import DemoContext
    from medsight.demo.safety import run

    ctx = DemoContext(out_dir=tmp_path, quiet=True, fast=True)
    out = run(ctx)
    assert set(out["ood_auroc"]) == {"site_C", "different_modality", "corrupted"}
    assert max(out["ood_auroc"]["different_modality"].values()) > 0.9
    cal = json.loads(ctx.paths["safety_calibration"].read_text())
    assert cal["format"] == "medsight-calibration" and cal["labels"] == ["lesion"]
    assert ctx.paths["safety_reliability"].read_bytes()[:4] == b"\x89PNG"
