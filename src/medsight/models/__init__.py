"""Segmentation networks built from a plan over MONAI's U-Net family."""

from medsight.models.build import build_model

__all__ = ["build_model"]
