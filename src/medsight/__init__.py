"""medsight: medical images to validated, calibrated, explainable and traceable model outputs."""

__version__ = "0.1.0"
