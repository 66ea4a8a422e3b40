"""Accept or refer every prediction, with the reasons.

A ``ReferralPolicy`` holds one threshold per score (all scores: higher = more suspicious). Thresholds are set on
*in-distribution validation* cases so that a target share of them (e.g. 95%) is kept when all signals are
applied together; quality-check failures always refer. The policy is stored as JSON with the model.

Standard signal names: ``low_confidence`` (e.g. 1 - max probability), ``high_uncertainty`` (predictive entropy or
mutual information), ``out_of_distribution`` (Mahalanobis or energy score); any other name works too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigError, MetricError
from medsight.files import atomic_write_text
from medsight.safety.quality import QualityFinding

ACCEPT, REFER = "accept", "refer"
_READABLE = {
    "low_confidence": "low confidence",
    "high_uncertainty": "high uncertainty",
    "out_of_distribution": "out of distribution",
}


@dataclass(frozen=True)
class Decision:
    """``accept`` or ``refer`` and, when referred, one sentence per reason."""

    action: str
    reasons: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.action == ACCEPT

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.action, "reasons": list(self.reasons), "reason_codes": list(self.codes)}


@dataclass
class ReferralPolicy:
    """Per-signal thresholds; ``decide`` refers when any score exceeds its threshold or any quality check failed."""

    thresholds: dict[str, float] = field(default_factory=dict)
    target_keep: float | None = None
    fit: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit_on_validation(cls, scores: Mapping[str, Sequence[float]], target_keep: float = 0.95) -> "ReferralPolicy":
        """Thresholds that keep at least ``target_keep`` of the (in-distribution) validation cases.

        All signals use the same per-signal quantile level ``q``; ``q`` is raised from ``target_keep`` by bisection
        until the *joint* keep rate (no signal above its threshold) reaches the target, so adding signals does not
        silently refer more cases than asked for.
        """
        if not 0 < target_keep <= 1:
            raise ConfigError(f"target_keep must lie in (0, 1], got {target_keep}")
        if not scores:
            raise ConfigError("at least one referral signal is needed")
        arrs = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
        n = {len(a) for a in arrs.values()}
        if len(n) != 1 or n.pop() < 2:
            raise MetricError("every referral signal needs one score per validation case (two cases at least)")
        if not all(np.all(np.isfinite(a)) for a in arrs.values()):
            raise MetricError("referral scores must be finite")

        def thresholds(q: float) -> dict[str, float]:
            return {k: float(np.quantile(a, q, method="higher")) for k, a in arrs.items()}

        def keep(th: dict[str, float]) -> float:
            return float(np.mean(np.all([arrs[k] <= t for k, t in th.items()], axis=0)))

        lo, hi = target_keep, 1.0
        if keep(thresholds(lo)) >= target_keep:
            hi = lo
        for _ in range(50):
            if hi - lo < 1e-6:
                break
            mid = (lo + hi) / 2
            if keep(thresholds(mid)) >= target_keep:
                hi = mid
            else:
                lo = mid
        th = thresholds(hi)
        return cls(th, target_keep, {"n_validation": len(next(iter(arrs.values()))), "quantile": hi,
                                     "kept_on_validation": keep(th)})

    def decide(self, scores: Mapping[str, float], quality: Sequence[QualityFinding] = ()) -> Decision:
        """The decision for one case; missing scores are not checked (the policy may have more signals)."""
        reasons, codes = [], []
        for f in quality:
            reasons.append(f"input-quality check failed: {f.message}")
            codes.append(f.code)
        for name, t in self.thresholds.items():
            if name in scores and not float(scores[name]) <= t:  # NaN scores refer too
                reasons.append(f"{_READABLE.get(name, name)} (score {float(scores[name]):.4g} > threshold {t:.4g})")
                codes.append(name)
        return Decision(REFER if reasons else ACCEPT, tuple(reasons), tuple(codes))

    def decide_many(self, scores: Mapping[str, Sequence[float]],
                    quality: Sequence[Sequence[QualityFinding]] | None = None) -> list[Decision]:
        arrs = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
        n = len(next(iter(arrs.values()))) if arrs else len(quality or [])
        return [self.decide({k: a[i] for k, a in arrs.items()}, (quality[i] if quality else ())) for i in range(n)]

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "target_keep": self.target_keep, "fit": self.fit}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReferralPolicy":
        return cls({str(k): float(v) for k, v in d["thresholds"].items()}, d.get("target_keep"), dict(d.get("fit", {})))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "ReferralPolicy":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise ConfigError(f"cannot read the referral policy ({err}); refit it", p) from err
