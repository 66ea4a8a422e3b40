"""DICOM de-identification: the PS3.15 Annex E Basic Profile with keyed pseudonyms and burned-in text flags.

``profile`` holds the action table as data, ``pseudonym`` the keyed HMAC mappings, ``apply`` the per-dataset
transform, ``pixels`` the burned-in-text flag, ``redact`` (with ``ocr`` and ``regions``) the opt-in redaction of
burned-in text with OCR verification, ``run`` the parallel, resumable batch runner.
"""

from __future__ import annotations

from medsight.deid.apply import DeidOptions, DeidSummary, deidentify_dataset
from medsight.deid.pseudonym import Pseudonymizer
from medsight.deid.run import RunOptions, RunSummary, deidentify_folder

__all__ = ["DeidOptions", "DeidSummary", "Pseudonymizer", "RunOptions", "RunSummary", "deidentify_dataset",
           "deidentify_folder"]
