"""Per-prediction safety assessment from the artifacts stored in a model directory.

What the CLI (``predict-cls``) and the service call for each image: given the image and the model's raw
logits and penultimate features, return calibrated probabilities, the OOD/confidence scores, the input-quality
findings, and ``accept`` / ``refer`` with the reasons. Every artifact is optional: a model directory without a
referral policy still gets calibrated probabilities and quality checks.

Files (all JSON, written by the safety layer): ``calibration.json``, ``ood_mahalanobis.json``,
``referral.json``, ``quality.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.image import Image
from medsight.safety.ood import Mahalanobis, energy_score, msp_score
from medsight.safety.quality import QualitySpec
from medsight.safety.referral import ReferralPolicy
from medsight.safety.temperature import Calibration, load_calibration, probabilities

MAHALANOBIS_FILE, REFERRAL_FILE, QUALITY_FILE = "ood_mahalanobis.json", "referral.json", "quality.json"


@dataclass
class SafetyAssessor:
    """The safety artifacts of one model; ``assess`` turns one prediction into a traceable decision."""

    activation: str = "sigmoid"
    calibration: Calibration | None = None
    mahalanobis: Mahalanobis | None = None
    policy: ReferralPolicy | None = None
    quality: QualitySpec | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, activation: str | None = None) -> "SafetyAssessor":
        d = Path(model_dir)
        cal = load_calibration(d)
        act = activation or (cal.activation if cal is not None else "sigmoid")
        return cls(
            act, cal,
            Mahalanobis.load(d / MAHALANOBIS_FILE) if (d / MAHALANOBIS_FILE).exists() else None,
            ReferralPolicy.load(d / REFERRAL_FILE) if (d / REFERRAL_FILE).exists() else None,
            QualitySpec.load(d / QUALITY_FILE) if (d / QUALITY_FILE).exists() else None,
        )

    def save(self, model_dir: str | Path) -> None:
        from medsight.safety.temperature import save_calibration

        d = Path(model_dir)
        if self.calibration is not None:
            save_calibration(d, self.calibration)
        if self.mahalanobis is not None:
            self.mahalanobis.save(d / MAHALANOBIS_FILE)
        if self.policy is not None:
            self.policy.save(d / REFERRAL_FILE)
        if self.quality is not None:
            self.quality.save(d / QUALITY_FILE)

    def assess(self, image: Image | None, logits: np.ndarray, features: np.ndarray | None = None) -> dict[str, Any]:
        """Calibrated probabilities, scores, and the decision with reasons, for ONE image (logits shape (C,))."""
        z = np.asarray(logits, dtype=np.float64).reshape(1, -1)
        zc = self.calibration.apply(z) if self.calibration is not None else z
        scores = {"low_confidence": float(msp_score(zc, self.activation)[0]),
                  "energy": float(energy_score(z, activation=self.activation)[0])}
        if self.mahalanobis is not None and features is not None:
            scores["out_of_distribution"] = float(
                self.mahalanobis.score(np.asarray(features, dtype=np.float64).reshape(1, -1))[0])
        findings = self.quality.check(image) if (self.quality is not None and image is not None) else []
        policy = self.policy or ReferralPolicy()
        decision = policy.decide(scores, findings)
        return {"probabilities": probabilities(zc, self.activation)[0].tolist(), "calibrated": self.calibration is not None,
                "scores": scores, **decision.to_dict()}
