"""Evaluation metrics: segmentation overlap and surface distances, classification, calibration, detection,
decision curves, bootstrap confidence intervals and subgroup tables.

Every definition (and every empty-input convention) is stated in docs/metrics.md and checked in tests against an
independent reference (MONAI, scikit-learn, brute force or a published worked example). Submodules are imported on
use so that ``import medsight.metrics`` stays cheap.
"""

from __future__ import annotations
