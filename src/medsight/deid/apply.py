"""Apply the Basic Profile to one pydicom Dataset, in place, recursing into every sequence.

Order of rules for each element (first match wins):

1. private tags (odd group): removed, unless on ``profile.SAFE_PRIVATE`` (then its private creator stays too);
2. group lengths (stale once anything changes) and curve/overlay repeating groups: removed;
3. PatientID (at any depth): replaced by the keyed patient pseudonym; PatientName gets the same pseudonym;
4. dates (DA/DT) when shifting: moved by the per-patient keyed offset, whatever the table says (intervals kept);
5. the Table E.1-1 action (remove / empty / dummy / replace UID / recurse);
6. beyond the table: any other UID that is not a registered DICOM UID (SOP class, transfer syntax...) is replaced,
   any other date is removed (or shifted), any other person name is emptied, other sequences are recursed into.

Pixel Data is never read or decoded, so its bytes are written back unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from medsight.deid.profile import (SAFE_PRIVATE, Action, action_table, damaged_code_value,
                                   repeating_group_action)
from medsight.deid.pseudonym import Pseudonymizer, shift_date, shift_datetime

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
PIXEL_DATA = 0x7FE00010
# DeidentificationMethod is LO (64 characters each, several values allowed)
METHOD = ["PS3.15 Annex E Basic Profile (medsight)", "keyed HMAC-SHA256 pseudonyms"]

_DUMMY: dict[str, object] = {
    "PN": "ANONYMOUS", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "LT": "ANONYMIZED", "ST": "ANONYMIZED",
    "UT": "ANONYMIZED", "UC": "ANONYMIZED", "CS": "ANONYMIZED", "AE": "ANONYMIZED", "AS": "000Y",
    "DA": "19000101", "DT": "19000101000000", "TM": "000000", "IS": "0", "DS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UR": "", "OB": b"\x00\x00", "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}
_EMPTY_BY_VR: dict[str, object] = {"SQ": None}

_TABLE = action_table()


@dataclass
class DeidOptions:
    """What the profile should do beyond its fixed table; travels to worker processes."""

    shift_dates: bool = False
    keep_safe_private: bool = True


@dataclass
class DeidSummary:
    """Counts of what was done to one dataset (no values: the report must carry no identifiers)."""

    counts: Counter = field(default_factory=Counter)
    date_offset_days: int | None = None

    def short(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))


def _vr_of(ds: Dataset, tag: int) -> str:
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr in (None, "UN"):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = vr or "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


def _is_standard_uid(value: str) -> bool:
    return bool(UID(value).keyword)


class _Walker:
    def __init__(self, pseudo: Pseudonymizer, options: DeidOptions, offset_days: int | None) -> None:
        self.p = pseudo
        self.o = options
        self.offset = offset_days
        self.counts: Counter = Counter()

    def walk(self, ds: Dataset) -> None:
        tags = list(ds.keys())
        private = [t for t in tags if t.group & 1]
        if private:
            self._private(ds, private)
        for tag in tags:
            if tag.group & 1 or tag == PIXEL_DATA:
                continue
            itag = int(tag)
            if tag.element == 0 or repeating_group_action(itag) is not None:  # stale group lengths; curves, overlays
                del ds[tag]
                self.counts["removed"] += 1
                continue
            if itag in (PATIENT_ID, PATIENT_NAME):
                continue  # handled once the walk of this level is done, see _patient()
            vr = _vr_of(ds, itag)
            action = _TABLE.get(itag)
            if vr in ("DA", "DT") and self.o.shift_dates and self.offset is not None:
                self._shift(ds, itag, vr)
                continue
            if action is None:
                self._beyond_table(ds, itag, vr)
            else:
                self._apply(ds, itag, vr, action)
        self._patient(ds, tags)

    # --- the rules -------------------------------------------------------------------------------------------
    def _patient(self, ds: Dataset, tags: list) -> None:
        if PATIENT_ID in tags:
            pid = str(ds[PATIENT_ID].value or "")
            pseudo = self.p.patient_id(pid)
            ds[PATIENT_ID].value = pseudo
            self.counts["patient_id"] += 1
            if PATIENT_NAME in tags:
                ds[PATIENT_NAME].value = pseudo
                self.counts["dummied"] += 1
        elif PATIENT_NAME in tags:
            ds[PATIENT_NAME].value = ""
            self.counts["emptied"] += 1

    def _private(self, ds: Dataset, private: list) -> None:
        keep: set[int] = set()
        if self.o.keep_safe_private:
            for t in private:
                elem = t.element
                if elem >= 0x1000:
                    creator_tag = (t.group << 16) | (elem >> 8)
                    if creator_tag in ds:
                        creator = str(ds[creator_tag].value).strip()
                        if (creator, t.group, elem & 0xFF) in SAFE_PRIVATE:
                            keep.update((int(t), creator_tag))
        for t in private:
            if int(t) not in keep:
                del ds[t]
                self.counts["private_removed"] += 1
        if keep:
            self.counts["private_kept"] += len(keep)

    def _shift(self, ds: Dataset, tag: int, vr: str) -> None:
        elem = ds[tag]
        values = elem.value if elem.VM > 1 else [elem.value]
        fn = shift_date if vr == "DA" else shift_datetime
        try:
            shifted = [fn(str(v or ""), self.offset) for v in values]
        except ValueError:
            del ds[tag]  # an unparseable date cannot be shifted safely
            self.counts["removed"] += 1
            return
        elem.value = shifted if elem.VM > 1 else shifted[0]
        self.counts["dates_shifted"] += 1

    def _beyond_table(self, ds: Dataset, tag: int, vr: str) -> None:
        if vr == "SQ":
            self._recurse(ds, tag)
        elif not dictionary_has_tag(tag) or vr not in ("UN", *dictionary_VR(tag).split(" or ")):
            del ds[tag]  # a tag no dictionary knows, or a known one with a foreign VR (a corrupt tag): no one can
            self.counts["removed"] += 1  # say its value is safe, so it goes
        elif vr == "UI":
            self._replace_uids(ds, tag, only_nonstandard=True)
        elif vr in ("DA", "DT"):
            del ds[tag]
            self.counts["removed"] += 1
        elif vr == "PN":
            ds[tag] = DataElement(tag, "PN", "")
            self.counts["emptied"] += 1
        elif damaged_code_value(vr, _raw_bytes(ds, tag)):
            del ds[tag]
            self.counts["removed"] += 1

    def _apply(self, ds: Dataset, tag: int, vr: str, action: Action) -> None:
        if action is Action.KEEP:
            if vr == "SQ":
                self._recurse(ds, tag)
            elif damaged_code_value(vr, _raw_bytes(ds, tag)):
                del ds[tag]
                self.counts["removed"] += 1
        elif action is Action.REMOVE:
            del ds[tag]
            self.counts["removed"] += 1
        elif action in (Action.EMPTY, Action.CLEAN) or (action is Action.DUMMY and vr == "SQ"):
            ds[tag] = DataElement(tag, vr, Sequence([]) if vr == "SQ" else None)
            self.counts["emptied"] += 1
        elif action is Action.DUMMY:
            if vr == "UI":
                self._replace_uids(ds, tag, only_nonstandard=False)
            else:
                ds[tag] = DataElement(tag, vr, _DUMMY.get(vr, ""))
                self.counts["dummied"] += 1
        elif action is Action.UID:
            if vr == "SQ":
                self._recurse(ds, tag)
            elif vr == "UI":
                self._replace_uids(ds, tag, only_nonstandard=False)
            else:  # a U code on a non-UID VR would be a table error; fail safe
                del ds[tag]
                self.counts["removed"] += 1

    def _replace_uids(self, ds: Dataset, tag: int, only_nonstandard: bool) -> None:
        elem = ds[tag]
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        out = []
        changed = False
        for v in values:
            s = str(v or "").strip().rstrip("\x00")
            if not s or (only_nonstandard and _is_standard_uid(s)):
                out.append(s)
                continue
            out.append(self.p.uid(s))
            changed = True
        if changed:
            elem.value = out if elem.VM > 1 else out[0]
            self.counts["uids_replaced"] += 1

    def _recurse(self, ds: Dataset, tag: int) -> None:
        for item in ds[tag].value or ():
            self.walk(item)


def _raw_bytes(ds: Dataset, tag: int) -> bytes:
    """An element's value as stored (or re-encoded when pydicom already decoded it)."""
    value = ds.get_item(tag).value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return "\\".join("" if v is None else str(v) for v in values).encode("latin-1", "replace")


def deidentify_dataset(ds: Dataset, pseudo: Pseudonymizer, options: DeidOptions | None = None) -> DeidSummary:
    """De-identify ``ds`` in place (and its file meta) and record how in the dataset itself."""
    options = options or DeidOptions()
    original_pid = str(ds.get("PatientID", "") or "")
    offset = pseudo.date_offset_days(original_pid) if options.shift_dates else None
    walker = _Walker(pseudo, options, offset)
    walker.walk(ds)

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD + ["dates shifted per patient" if options.shift_dates else "dates removed"]
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if options.shift_dates:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    if walker.counts.get("private_kept"):
        codes.append(("113111", "Retain Safe Private Option"))
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if options.shift_dates else "REMOVED"

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in list(meta.keys()):  # a meta UID whose length is corrupt swallowed the dataset: drop it
            if damaged_code_value(_vr_of(meta, int(tag)), _raw_bytes(meta, int(tag))):
                del meta[tag]
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                   "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation"):
            if kw in meta:
                delattr(meta, kw)
    return DeidSummary(counts=walker.counts, date_offset_days=offset)
