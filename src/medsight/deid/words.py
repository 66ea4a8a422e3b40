"""Is a word read in the pixels an identifier (redact it) or an annotation a reader needs (keep it)?

Identifiers: the header's own PHI values (names, IDs, birth and study dates, institution, physicians, operators:
``phi_terms``, collected *before* the header is de-identified), anything shaped like a date, a time or an ID
number (>= 5 digits), labels that announce one (DOB, MRN, NAME...), and every other word of >= 3 letters that is
not in the annotation vocabulary: a name we have never seen looks exactly like that, so unknown words are
identifiers (the safe default). Annotations: numbers with units ("16cm", "36Hz", "0.6", "60%"), device
parameters (TIS, MI, THI, "DR60", "20dB/DR60"), probe and mode codes ("L12-5", "6C1", "2D"), orientation
letters, view labels from an anatomy and imaging vocabulary ("Sag Liver L-M"), vendor names.

Classification is per word; ``redact`` widens it to the line (a line holding an identifier is filled whole, so
"SMITH JOHN R" loses its "R" too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from pydicom.dataset import Dataset

IDENTIFIER, ANNOTATION = "identifier", "annotation"

# Header elements whose values may be burned into the pixels (PS3.15 E.1-1 identifiers that are text or dates).
PHI_KEYWORDS = ("PatientName", "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "PatientBirthDate",
                "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
                "OtherPatientNames", "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress",
                "InstitutionalDepartmentName", "ReferringPhysicianName", "PerformingPhysicianName",
                "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician", "StationName",
                "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime",
                "AcquisitionTime", "ContentTime", "DeviceSerialNumber", "RequestedProcedureID")
_DATE_KEYWORDS = {"PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"}

# Imaging annotations that are not identifiers (upper case). Extend with the ``extra_annotation`` argument.
VOCABULARY = frozenset("""
2D 3D 4D B M CF PW CW PD PWR POWER COLOR COLOUR DOPPLER MODE CINE FRZ FREEZE LIVE ZOOM DEPTH GAIN FOCUS FRQ FREQ
FREQUENCY PRF WF SV HPRF TIS TIB TIC MI THI HD HDR DR DB DYN RES MED LOW HIGH HI LO PEN GEN HGEN HRES PWR MAP MAPE
ST SRI CRI XRES ASC DTCE TEQ SPECKLE COMPOUND ANGLE ANG FPS HZ KHZ MHZ CM MM BPM CMS MMHG SEC MS KV KVP MA MAS
SAG SAGITTAL TRANS TRANSVERSE TRV LONG LONGITUDINAL COR CORONAL AX AXIAL OBL OBLIQUE VIEW LAT LATERAL MEDIAL MID
UPPER LOWER UP LOW SUP INF PROX PROXIMAL DIST DISTAL ANT POST LEFT RIGHT LT RT BILAT BILATERAL
LIVER KIDNEY RENAL SPLEEN PANCREAS GB GALLBLADDER CBD IVC AORTA PORTA PORTAL HEPATIC BLADDER PROSTATE UTERUS
OVARY OVARIES ADNEXA TESTIS TESTES SCROTUM THYROID NECK BREAST AXILLA LYMPH NODE NODES CAROTID CCA ICA ECA VA
VERTEBRAL JUGULAR IJV VEIN ARTERY VENOUS ARTERIAL HEART CARDIAC LV RV LA RA MV AV TV PV APEX APICAL PLAX PSAX
CHAMBER ABD ABDOMEN ABDOMINAL PELVIS PELVIC OB GYN FETAL FETUS HEAD CHEST LUNG PLEURA MSK MSKEL SKEL MUSCLE
TENDON JOINT KNEE SHOULDER HIP ELBOW WRIST ANKLE FOOT HAND SUPERFICIAL SMALL PARTS VASCULAR VAS ADV GENERAL
STANDARD STD PEDS NEURO ENDO TV TA TR ECHO STRESS BIOPSY GUIDE MARKER SCALE RULER LENGTH AREA VOL VOLUME DIAM
AC FL BPD HC CRL EFW GA EDD LMP HR SIZE
GE PHILIPS SIEMENS TOSHIBA CANON SAMSUNG MEDISON ESAOTE MINDRAY HITACHI ALOKA FUJIFILM SONOSITE ZONARE
SUPERSONIC BK LOGIQ VOLUSON VIVID EPIQ IU22 AFFINITI ACUSON SEQUOIA APLIO ARIETTA
IM IMG IMAGE SE SER SERIES FRAME FR OF NO EXAM PORTABLE SUPINE ERECT UPRIGHT PA AP LAO RAO LPO RPO
""".split())
# Labels that announce an identifier: filled with it.
PHI_LABELS = frozenset("""NAME PATIENT PAT PT DOB BORN BIRTH MRN ID ACC ACCESSION SSN DATE TIME AGE SEX
PHYSICIAN DR REF REFERRING OPERATOR SONOGRAPHER TECH HOSPITAL CLINIC INSTITUTION ADDRESS PHONE""".split()) - {"DR"}

_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|SEPT|OCT|NOV|DEC"
_DATE = re.compile(r"\d{1,4}[/.\-]\d{1,2}[/.\-]\d{2,4}|\d{1,2}[\-.]?(" + _MONTHS + r")[A-Z]*[\-.]?\d{2,4}|(" + _MONTHS
                   + r")[A-Z]*[\-. ]?\d{1,2}", re.I)
_TIME = re.compile(r"\d{1,2}:\d{2}(:\d{2})?", re.I)
_LONG_DIGITS = re.compile(r"\d{5,}")
_UNITS = ("%", "CM", "MM", "M", "HZ", "KHZ", "MHZ", "DB", "FPS", "BPM", "CM/S", "CMS", "MMHG", "S", "MS", "KV", "KVP",
          "MA", "MAS", "X", "DEG", "HU", "W", "G", "ML")
_NUMBER = re.compile(r"[+\-<>=~*]?\d+([.,]\d+)?(" + "|".join(re.escape(u) for u in _UNITS) + r")?", re.I)
# a device code: short letter groups and digits (L12-5, 6C1, DR60, TIS0.0, MapE/ST2, C5-1, X3, H4.00, 2D--100%)
_CODE = re.compile(r"([A-Z]{1,4}|\d{1,3}([.,]\d{1,2})?%?)([\-/:.<>=#]{0,2}([A-Z]{1,4}|\d{1,3}([.,]\d{1,2})?%?))*",
                   re.I)


def _norm(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def _date_forms(value: str) -> set[str]:
    """A DICOM DA value (YYYYMMDD) in the ways screens print it, normalised (letters and digits only)."""
    try:
        d = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return {value} if len(value) >= 4 else set()
    y, m, dd = f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}"
    mon = d.strftime("%b").upper()
    forms = {y + m + dd, m + dd + y, dd + m + y, str(d.month) + str(d.day) + y, dd + mon + y, str(d.day) + mon + y,
             m + dd + y[2:], dd + m + y[2:], mon + dd + y}
    return forms


def phi_terms(ds: Dataset | None) -> frozenset[str]:
    """Normalised tokens (upper-case letters and digits) of the header's identifying values, dates in print forms.

    Call it on the dataset *before* de-identification; tokens shorter than 2 characters are dropped.
    """
    if ds is None:
        return frozenset()
    out: set[str] = set()
    for kw in PHI_KEYWORDS:
        value = ds.get(kw)
        if value in (None, ""):
            continue
        values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for v in values:
            text = str(v)
            if kw in _DATE_KEYWORDS and len(_norm(text)) == 8:
                out |= _date_forms(_norm(text))
                continue
            if kw.endswith("Time"):
                t = _norm(text)[:6]
                out |= {t[:4], t} if len(t) >= 4 else set()
                continue
            out.add(_norm(text))
            out.update(_norm(tok) for tok in re.split(r"[\s^,;/\\.\-]+", text))
    return frozenset(t for t in out if len(t) >= 2)


def _close(a: str, b: str) -> bool:
    """Equal, or one edit apart for words of >= 5 characters (OCR substitutes, drops or adds one letter)."""
    if a == b:
        return True
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _near_piece(w: str, t: str, k: int) -> bool:
    """``w`` is within ``k`` edits of some piece of ``t`` (edit distance with free start and end in ``t``):
    a partly read, partly misread name ("OVALS" of "KOWALSKI") still matches the header's value."""
    prev = [0] * (len(t) + 1)  # a piece may start anywhere in t at no cost
    for i, ch in enumerate(w, 1):
        cur = [i]
        for j, tc in enumerate(t, 1):
            cur.append(min(prev[j - 1] + (ch != tc), prev[j] + 1, cur[j - 1] + 1))
        prev = cur
    return min(prev) <= k


def matches_phi(word: str, terms: Iterable[str]) -> bool:
    """The word is (close to) a header PHI token, or a >= 4-character piece of one (a clipped "PATIENTFI..."),
    or a >= 5-character word within 1 edit (2 from 8 characters) of a piece of a >= 5-character token."""
    w = _norm(word)
    if len(w) < 2:
        return False
    for t in terms:
        if _close(w, t) or (len(w) >= 4 and (w in t or (len(t) >= 4 and t in w))):
            return True
        if len(w) >= 5 and len(t) >= 5 and _near_piece(w, t, 2 if len(w) >= 8 else 1):
            return True
    return False


def classify(word: str, terms: Iterable[str] = (), extra_annotation: Iterable[str] = ()) -> tuple[str, str]:
    """(IDENTIFIER or ANNOTATION, the rule that decided) for one word as read by OCR."""
    raw = word.strip().strip(".,;:'\"()[]{}|_")
    w = _norm(raw)
    if not w:
        return ANNOTATION, "no letters or digits"
    if matches_phi(raw, terms):
        return IDENTIFIER, "header value"
    if _DATE.search(raw):
        return IDENTIFIER, "date"
    if _TIME.search(raw):
        return IDENTIFIER, "time"
    if _LONG_DIGITS.search(raw):
        return IDENTIFIER, "number of >= 5 digits"
    if re.search(r"(?<!\d)(19|20)\d\d(?!\d)", raw):
        return IDENTIFIER, "year"
    if sum(ch.isdigit() for ch in w) >= 6:
        return IDENTIFIER, "six or more digits (a date or ID read with a slip)"
    upper = raw.upper()
    if w in PHI_LABELS:
        return IDENTIFIER, "identifier label"
    vocab = VOCABULARY | {_norm(x) for x in extra_annotation}
    if w in vocab:
        return ANNOTATION, "vocabulary"
    if _NUMBER.fullmatch(upper.replace(" ", "")):
        return ANNOTATION, "number or measurement"
    letters = sum(ch.isalpha() for ch in w)
    if letters <= 2 and _CODE.fullmatch(upper.lstrip("*+")):
        return ANNOTATION, "short code"
    parts = [p for p in re.split(r"[\-/:.<>=#]+", upper.lstrip("*+")) if p]
    if parts and all(_norm(p) in vocab or _NUMBER.fullmatch(p) or (len(_norm(p)) <= 2) for p in parts) \
            and _CODE.fullmatch(upper.lstrip("*+")):
        return ANNOTATION, "parameter code"
    if any(ch.isdigit() for ch in w) and _CODE.fullmatch(upper.lstrip("*+")):
        return ANNOTATION, "device code"
    if letters <= 2:
        return ANNOTATION, "one or two letters"
    if any(w.startswith(v) and len(v) >= 4 and len(w) - len(v) <= 1 for v in vocab):
        return ANNOTATION, "vocabulary word run into one letter"  # "DTCE M" read as "DTCEM"
    pieces = [p for p in re.split(r"[^A-Za-z0-9%.]+", raw) if p]
    if len(pieces) > 1 and all(classify(p, terms, extra_annotation)[0] == ANNOTATION for p in pieces):
        return ANNOTATION, "annotation pieces"  # "P'Med": a stray mark between two annotations
    return IDENTIFIER, "unknown word (could be a name)"
