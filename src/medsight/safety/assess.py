"""Per-prediction safety assessment from the artifacts stored in a model directory.

What the CLI (``predict-cls``) and the service call for each image: given the image and the model's raw
logits and penultimate features, return calibrated probabilities, the OOD/confidence scores, the input-quality
findings, and ``accept`` / ``refer`` with the reasons. Every artifact is optional: a model directory without a
referral policy still gets calibrated probabilities and quality checks.

Files (all JSON, written by the safety layer): ``calibration.json``, ``ood_mahalanobis.json``,
``referral.json``, ``quality.json``. In a model package they are read only when the manifest lists them, and
``save`` writes them as a new package version (parent id recorded; a classifier's thresholds re-derived on the
calibrated validation probabilities), never as files dropped beside the weights.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.image import Image
from medsight.package.package import Package, load_package
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
    def from_model_dir(cls, model_dir: str | Path | Package, activation: str | None = None) -> "SafetyAssessor":
        """The artifacts of a package (only files its manifest lists) or of a plain folder."""

        def artifact(name: str) -> Path | None:
            if isinstance(model_dir, Package):
                return model_dir.file(name) if model_dir.has(name) else None
            path = Path(model_dir) / name
            return path if path.exists() else None

        cal = load_calibration(model_dir)
        act = activation or (cal.activation if cal is not None else "sigmoid")
        maha, ref, qual = artifact(MAHALANOBIS_FILE), artifact(REFERRAL_FILE), artifact(QUALITY_FILE)
        return cls(act, cal, Mahalanobis.load(maha) if maha else None, ReferralPolicy.load(ref) if ref else None,
                   QualitySpec.load(qual) if qual else None)

    def _write(self, d: Path) -> None:
        from medsight.safety.temperature import save_calibration

        if self.calibration is not None:
            save_calibration(d, self.calibration)
        if self.mahalanobis is not None:
            self.mahalanobis.save(d / MAHALANOBIS_FILE)
        if self.policy is not None:
            self.policy.save(d / REFERRAL_FILE)
        if self.quality is not None:
            self.quality.save(d / QUALITY_FILE)

    def save(self, model_dir: str | Path | Package, *, extra_files: dict[str, bytes] | None = None,
             dest_dir: str | Path | None = None) -> Package | None:
        """Store the artifacts (and ``extra_files``): a new version of a model package in its own folder
        (``dest_dir``, default beside the parent; returned), or files in a plain folder."""
        pkg = model_dir if isinstance(model_dir, Package) else None
        if pkg is None and (Path(model_dir) / "manifest.json").exists():
            pkg = load_package(model_dir)
        if pkg is None:
            self._write(Path(model_dir))
            for name, data in (extra_files or {}).items():
                (Path(model_dir) / name).write_bytes(data)
            return None
        with tempfile.TemporaryDirectory() as tmp:
            self._write(Path(tmp))
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir()} | dict(extra_files or {})
        if pkg.task == "classification" and self.calibration is not None:
            from medsight.classification.package import calibrate_package

            files.pop("calibration.json")
            return calibrate_package(pkg, self.calibration, extra_files=files, dest_dir=dest_dir)
        from medsight.package.package import derive_package

        return derive_package(pkg, files=files, dest_dir=dest_dir)

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
