"""Risk-coverage analysis of selective prediction: what error rate remains when only the most confident share of
cases is accepted (Geifman & El-Yaniv, 2017). A useful referral rule has a curve that falls as coverage drops.
"""

from __future__ import annotations

import numpy as np

from medsight.errors import MetricError


def risk_coverage_curve(errors: np.ndarray, uncertainty: np.ndarray) -> dict[str, np.ndarray]:
    """Coverage k/N and the mean error of the k least uncertain cases, for k = 1..N.

    ``errors`` is a per-case loss (1 = wrong, 0 = right, or any non-negative loss); ``uncertainty`` any score
    where higher means less trustworthy. Ties in uncertainty are broken by keeping the input order (stable sort),
    so the curve is deterministic.
    """
    e = np.asarray(errors, dtype=np.float64)
    u = np.asarray(uncertainty, dtype=np.float64)
    if e.shape != u.shape or e.ndim != 1 or len(e) == 0:
        raise MetricError(f"errors and uncertainty must be equal-length 1-D arrays, got {e.shape} and {u.shape}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(u))):
        raise MetricError("errors and uncertainty must be finite")
    order = np.argsort(u, kind="stable")
    k = np.arange(1, len(e) + 1)
    risk = np.cumsum(e[order]) / k
    return {"coverage": k / len(e), "risk": risk, "threshold": u[order]}


def aurc(errors: np.ndarray, uncertainty: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean of the risks at coverages 1/N..N/N (lower is better)."""
    return float(risk_coverage_curve(errors, uncertainty)["risk"].mean())


def risk_at_coverage(errors: np.ndarray, uncertainty: np.ndarray, coverage: float) -> float:
    """Error rate among the ceil(coverage * N) least uncertain cases."""
    if not 0 < coverage <= 1:
        raise MetricError(f"coverage must lie in (0, 1], got {coverage}")
    curve = risk_coverage_curve(errors, uncertainty)
    k = int(np.ceil(coverage * len(curve["risk"]) - 1e-9))
    return float(curve["risk"][max(k, 1) - 1])
