"""The action table against entries read off PS3.15 Table E.1-1, and the keyed pseudonym functions."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

import pytest
from pydicom.datadict import tag_for_keyword

from medsight.deid.pixels import burned_in_reason
from medsight.deid.profile import BASIC_PROFILE, Action, action_table, repeating_group_action, resolve
from medsight.deid.pseudonym import MAX_SHIFT_DAYS, Pseudonymizer, shift_date, shift_datetime
from medsight.errors import ConfigError

# (keyword, Basic Profile code) copied by hand from PS3.15 Table E.1-1
STANDARD_ROWS = [("PatientName", "Z"), ("PatientID", "Z"), ("PatientBirthDate", "Z"), ("PatientSex", "Z"),
                 ("StudyInstanceUID", "U"), ("SeriesInstanceUID", "U"), ("SOPInstanceUID", "U"),
                 ("FrameOfReferenceUID", "U"), ("AccessionNumber", "Z"), ("StudyDate", "Z"),
                 ("InstitutionName", "X/Z/D"), ("ReferringPhysicianName", "Z"), ("OtherPatientIDs", "X"),
                 ("PatientAddress", "X"), ("ImageComments", "X"), ("StudyDescription", "X"),
                 ("SeriesDescription", "X"), ("OperatorsName", "X/Z/D"), ("ReferencedImageSequence", "X/Z/U*"),
                 ("ContentDate", "Z/D"), ("AcquisitionDate", "X/Z"), ("DeviceSerialNumber", "X/Z/D")]


@pytest.mark.parametrize(("keyword", "code"), STANDARD_ROWS)
def test_table_matches_standard(keyword, code):
    assert BASIC_PROFILE[keyword] == code


def test_every_keyword_is_a_dicom_attribute_and_resolves():
    table = action_table()
    assert len(table) == len(BASIC_PROFILE) > 200
    assert table[int(tag_for_keyword("PatientAddress"))] is Action.REMOVE
    assert resolve("X/Z") is Action.EMPTY and resolve("Z/D") is Action.DUMMY and resolve("X/Z/U*") is Action.UID
    with pytest.raises(ValueError):
        resolve("Q")


def test_curve_and_overlay_groups_removed_but_not_others():
    assert repeating_group_action(0x60003000) is Action.REMOVE  # Overlay Data
    assert repeating_group_action(0x601E0010) is Action.REMOVE
    assert repeating_group_action(0x50000010) is Action.REMOVE
    assert repeating_group_action(0x60010010) is None  # odd group: private, handled elsewhere
    assert repeating_group_action(0x00100010) is None


def test_pseudonyms_are_keyed_hmac_and_deterministic():
    key = b"k" * 32
    p, q = Pseudonymizer(key), Pseudonymizer(b"j" * 32)
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    expected = int.from_bytes(hmac.new(key, b"uid\x00" + uid.encode(), hashlib.sha256).digest()[:16], "big")
    assert p.uid(uid) == f"2.25.{expected}"
    assert Pseudonymizer(key).uid(uid) == p.uid(uid) != q.uid(uid)
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", p.uid(uid)) and len(p.uid(uid)) <= 64
    assert p.patient_id("PAT1") == Pseudonymizer(key).patient_id("PAT1") != p.patient_id("PAT2")
    assert len(p.patient_id("PAT1")) == 20
    assert key.hex() not in repr(p) and "kkkk" not in repr(p)


def test_date_shift_keeps_intervals_and_is_per_patient():
    p = Pseudonymizer(b"s" * 32)
    off = p.date_offset_days("PAT1")
    assert -MAX_SHIFT_DAYS <= off <= -1 and off == p.date_offset_days("PAT1")
    a, b = shift_date("20190317", off), shift_date("20190401", off)
    d = lambda s: dt.datetime.strptime(s, "%Y%m%d")  # noqa: E731
    assert (d(b) - d(a)).days == 15
    assert shift_date("20200301", -1) == "20200229"  # leap day, worked by hand
    assert shift_datetime("20200301123000.5+0100", -1) == "20200229123000.5+0100"
    assert shift_date("", -5) == ""


def test_short_key_refused():
    with pytest.raises(ConfigError):
        Pseudonymizer(b"short")


def test_burned_in_flags():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "CT"
    assert burned_in_reason(ds) is None
    ds.BurnedInAnnotation = "YES"
    assert "BurnedInAnnotation" in burned_in_reason(ds)
    us = Dataset()
    us.Modality = "US"
    assert "ultrasound" in burned_in_reason(us)
    us.BurnedInAnnotation = "NO"
    assert burned_in_reason(us) is None
    sc = Dataset()
    sc.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    assert "Secondary Capture" in burned_in_reason(sc)
