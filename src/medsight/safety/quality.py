"""Input-quality checks run before a model sees an image: wrong modality, missing slices, implausible intensities.

Why: a model gives an answer for any array of the right shape. These checks catch inputs that are not what the
model was validated on for reasons a technologist can fix (wrong series sent, incomplete transfer, corrupt
pixel data) and give the referral rule a named reason. The expectations come from the training images
(``QualitySpec.fit``), not from hand-set constants, so they follow each model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigError
from medsight.files import atomic_write_text
from medsight.image import Image

WRONG_MODALITY = "wrong_modality"
MISSING_SLICES = "missing_slices"
IMPLAUSIBLE_INTENSITIES = "implausible_intensities"


@dataclass(frozen=True)
class QualityFinding:
    """One failed check: a stable code (for counting) and a sentence for the reader."""

    code: str
    message: str


@dataclass
class QualitySpec:
    """What a model's inputs looked like in training; ``check`` compares a new image against it.

    Intensity expectations are robust statistics over the training images: the range of each image's 1st and
    99th percentiles, widened by ``tolerance`` times the training spread (see ``_widen``).
    """

    modalities: list[str] = field(default_factory=list)  # DICOM modality codes seen in training ("MR", "CT")
    ndim: int | None = None
    p01_range: tuple[float, float] | None = None
    p99_range: tuple[float, float] | None = None
    min_slices: int | None = None
    max_slice_spacing_mm: float | None = None
    tolerance: float = 3.0
    blank_slice_std_ratio: float = 0.01  # a slice whose std is below this share of the volume's std is blank

    @classmethod
    def fit(cls, images: Iterable[Image | np.ndarray], modalities: Sequence[str] = (), tolerance: float = 3.0,
            ) -> "QualitySpec":
        """Learn the expectations from training images (Images or plain arrays)."""
        p01, p99, nslices, kspacing, ndims, mods = [], [], [], [], set(), set(m.upper() for m in modalities)
        for img in images:
            arr, geo_spacing, modality = _unpack(img)
            finite = arr[np.isfinite(arr)]
            lo, hi = np.percentile(finite, [1, 99]) if finite.size else (np.nan, np.nan)
            p01.append(lo)
            p99.append(hi)
            ndims.add(arr.ndim)
            if arr.ndim == 3:
                nslices.append(arr.shape[2])
                if geo_spacing is not None:
                    kspacing.append(geo_spacing[2])
            if modality:
                mods.add(modality.upper())
        if not p01:
            raise ConfigError("QualitySpec.fit needs at least one training image")
        dyn = float(np.nanmedian(np.asarray(p99) - np.asarray(p01)))
        return cls(
            modalities=sorted(mods),
            ndim=ndims.pop() if len(ndims) == 1 else None,
            p01_range=_widen(p01, tolerance, dyn),
            p99_range=_widen(p99, tolerance, dyn),
            min_slices=int(min(nslices)) if nslices else None,
            max_slice_spacing_mm=float(max(kspacing)) * 1.5 if kspacing else None,
            tolerance=tolerance,
        )

    def check(self, image: Image | np.ndarray) -> list[QualityFinding]:
        """Every check that fails for this image (empty list = passed)."""
        arr, spacing, modality = _unpack(image)
        found: list[QualityFinding] = []
        if modality and self.modalities and modality.upper() not in self.modalities:
            found.append(QualityFinding(WRONG_MODALITY, f"modality {modality} but the model was trained on "
                                                        f"{'/'.join(self.modalities)}"))
        if self.ndim is not None and arr.ndim != self.ndim:
            found.append(QualityFinding(WRONG_MODALITY, f"a {arr.ndim}-D image but the model expects {self.ndim}-D"))
        if arr.ndim == 3:
            found += self._check_slices(arr, spacing)
        found += self._check_intensities(arr)
        return found

    def _check_slices(self, arr: np.ndarray, spacing: Sequence[float] | None) -> list[QualityFinding]:
        out = []
        if self.min_slices is not None and arr.shape[2] < self.min_slices:
            out.append(QualityFinding(MISSING_SLICES, f"{arr.shape[2]} slices, fewer than the {self.min_slices} "
                                                      "of every training volume"))
        if self.max_slice_spacing_mm is not None and spacing is not None and spacing[2] > self.max_slice_spacing_mm:
            out.append(QualityFinding(MISSING_SLICES, f"slice spacing {spacing[2]:.2f} mm exceeds "
                                                      f"{self.max_slice_spacing_mm:.2f} mm (gaps in the series?)"))
        blank = _blank_interior_slices(arr, self.blank_slice_std_ratio)
        if blank:
            shown = ", ".join(str(k) for k in blank[:5]) + ("..." if len(blank) > 5 else "")
            out.append(QualityFinding(MISSING_SLICES, f"{len(blank)} blank slice(s) inside the volume (k = {shown})"))
        return out

    def _check_intensities(self, arr: np.ndarray) -> list[QualityFinding]:
        finite = np.isfinite(arr)
        if not finite.all():
            return [QualityFinding(IMPLAUSIBLE_INTENSITIES, f"{int((~finite).sum())} voxels are NaN or infinite")]
        if float(arr.max()) == float(arr.min()):
            return [QualityFinding(IMPLAUSIBLE_INTENSITIES, f"the image is constant ({float(arr.min()):g})")]
        lo, hi = np.percentile(arr, [1, 99])
        out = []
        for name, value, rng in (("1st", lo, self.p01_range), ("99th", hi, self.p99_range)):
            if rng is not None and not rng[0] <= value <= rng[1]:
                out.append(QualityFinding(IMPLAUSIBLE_INTENSITIES, f"{name} intensity percentile {value:.4g} outside "
                                                                   f"the training range {rng[0]:.4g}..{rng[1]:.4g}"))
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QualitySpec":
        d = dict(d)
        for key in ("p01_range", "p99_range"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "QualitySpec":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _unpack(img: Image | np.ndarray) -> tuple[np.ndarray, tuple[float, ...] | None, str]:
    if isinstance(img, Image):
        arr = img.array if not img.is_multichannel else img.array.mean(axis=-1)
        return np.asarray(arr, dtype=np.float64), img.spacing, img.provenance.modality
    return np.asarray(img, dtype=np.float64), None, ""


def _widen(values: list[float], tolerance: float, dynamic_range: float) -> tuple[float, float]:
    """Training min..max widened by ``tolerance`` x the larger of the inter-quartile spread and 5% of the typical
    dynamic range (p99 - p1), so that a handful of similar training images does not make the check brittle."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    q1, q3 = np.percentile(v, [25, 75])
    spread = max(q3 - q1, 0.05 * dynamic_range, 1e-6 * max(abs(v).max(), 1.0))
    return float(v.min() - tolerance * spread), float(v.max() + tolerance * spread)


def _blank_interior_slices(arr: np.ndarray, ratio: float) -> list[int]:
    """Slices (along k) with almost no signal variation, lying between slices that do have signal."""
    stds = arr.reshape(-1, arr.shape[2]).std(axis=0)
    ref = float(np.median(stds[stds > 0])) if (stds > 0).any() else 0.0
    if ref == 0.0:
        return []
    blank = stds < ratio * ref
    nonblank = np.flatnonzero(~blank)
    first, last = nonblank.min(), nonblank.max()
    return [int(k) for k in np.flatnonzero(blank) if first < k < last]
