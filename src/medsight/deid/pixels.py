"""Burned-in text: images whose pixels may show identifiers, which header de-identification cannot remove.

We flag from the header (no OCR): BurnedInAnnotation = YES, SOP classes that are screenshots or scanned
documents by nature (secondary capture, encapsulated documents), ultrasound and other video-like modalities
unless the header explicitly states ``BurnedInAnnotation = NO``. (Overlay planes, which may draw text, are
removed whole by the profile.)
Flagged files are held back by default; a person must review them before release, or ``--redact-pixels`` has
``redact.py`` remove the text and verify by OCR that none is left.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

# Secondary Capture family and encapsulated documents (PS3.4 B.5): screenshots, scans, PDFs.
BURNED_IN_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA Storage",
}
# Modalities whose images commonly carry burned-in patient text (scanner screens, video, photographs).
BURNED_IN_MODALITIES: dict[str, str] = {
    "US": "ultrasound", "IVUS": "intravascular ultrasound", "ES": "endoscopy", "XC": "external-camera photography",
    "GM": "general microscopy", "SM": "slide microscopy label", "OT": "modality 'other'", "DOC": "document",
}


def burned_in_reason(ds: Dataset | Mapping[str, str]) -> str | None:
    """Why this dataset (or a keyword -> value mapping) may carry text in its pixels; None when nothing suggests it."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    sop = str(ds.get("SOPClassUID", "") or "").strip()
    if sop in BURNED_IN_SOP_CLASSES:
        return f"SOP class {BURNED_IN_SOP_CLASSES[sop]} usually shows burned-in text"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in BURNED_IN_MODALITIES and flag != "NO":
        return f"modality {modality} ({BURNED_IN_MODALITIES[modality]}) often has burned-in text and " \
               "BurnedInAnnotation is not NO"
    return None
