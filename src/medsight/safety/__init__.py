"""Clinical safety layer: calibrated probabilities, uncertainty, out-of-distribution scores and referral.

Every score here follows one sign convention: for OOD and uncertainty scores, *higher means more suspicious*,
so a single threshold ``score > t`` means "refer" everywhere.
"""
