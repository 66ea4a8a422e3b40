"""Word classification (identifier or annotation) against a hand-labelled list read off the real deid-data
ultrasounds and the planted benchmark, and the header PHI terms it matches against."""

from __future__ import annotations

import pydicom
import pytest

from medsight.deid.words import ANNOTATION, IDENTIFIER, classify, matches_phi, phi_terms

# Every word as printed on GREYSCALE_IMAGE / RGB_IMAGE (deid-data) and US1_UNCR (pydicom-data), labelled by hand.
ANNOTATIONS = """Adv Breast L12-5 36Hz RS 2D 60% Dyn R 58 P Med Res TAC1 TIS0.0 MI 0.6 M3 x3 4.0cm M
SIEMENS 6C1 HD *Renal General TIS: 0.5 TIB: MI: 1.4 19fps 2D--100% THI H4.00 MHz 20dB/DR60 ASC 3 DTCE MapE/ST2
Sag Liver L-M 16cm LYMPH NODE PWR TIS<0.4 MI=0.8 AO=100% CINE 0118 IM#2 22G22 78DR78 +59.3 -59.3 cm/s 75 bpm
15cm 18Hz 59% C 50 CF 68% 3850Hz 2.5MHz M4 HGen P.Low""".split()
IDENTIFIERS = """ZZZDOWNTIME,MARY 00047431395 8:48:26 4/14/2020 120907058 CCHS CLEVELAND CLINIC DOB: 08/29/1951
03/02/2017 05:24:57PM 00079241539 PATIENTFI... ZZZ TEST BAPTIST NGUYEN VAN O'BRIEN KATE MUELLER^HANS SMITH JOHN
DOE, JANE MRN 78622131 07/02/1963 +2:09:04 1943 6716/1943 14-APR-2020""".split()


def test_hand_labelled_words_are_classified_as_labelled():
    wrong = [(w, classify(w)) for w in ANNOTATIONS if classify(w)[0] != ANNOTATION]
    wrong += [(w, classify(w)) for w in IDENTIFIERS if classify(w)[0] != IDENTIFIER]
    assert wrong == []


@pytest.mark.parametrize("word,rule", [("08/29/1951", "date"), ("05:24:57PM", "time"), ("00079241539", "number"),
                                       ("KOWALSKI", "unknown"), ("16cm", "number"), ("Liver", "vocabulary"),
                                       ("L12-5", "short code"), ("DTCEM", "vocabulary word run")])
def test_rule_that_decided(word, rule):
    assert classify(word)[1].startswith(rule)


def test_header_values_make_identifiers_of_words_that_look_harmless(deid_data_file):
    ds = pydicom.dcmread(deid_data_file("ultrasounds/GREYSCALE_IMAGE.dcm"), stop_before_pixels=True)
    terms = phi_terms(ds)
    # name parts, the ID, the birth date in the screen's month/day/year form, the institution's words
    assert {"PATIENTFIVE", "2020202020202", "08291951", "CCHS", "CLEVELAND"} <= terms
    assert matches_phi("CLEVELAN..", terms) and matches_phi("PATIENTFI", terms)  # clipped on the screen
    assert matches_phi("CLEVELAMD", terms)  # one OCR slip
    assert not matches_phi("Breast", terms) and not matches_phi("MI", terms)
    general = phi_terms(pydicom.Dataset()) | {"GENERAL"}  # an institution called "... GENERAL HOSPITAL"
    assert classify("General", general) == (IDENTIFIER, "header value")
    assert classify("General") == (ANNOTATION, "vocabulary")


def test_partly_misread_header_values_still_match():
    from medsight.deid.words import matches_phi

    terms = ["KOWALSKI", "ANNA", "CLEVELAND"]
    assert matches_phi("OVALS", terms)  # OWALS of KOWALSKI with W read as V: one edit
    assert matches_phi("KOVALSK1", terms)  # 8 characters: two edits from KOWALSKI (W->V, I->1)
    assert not matches_phi("KOVVALSK1", terms)  # three edits (W->VV is two)
    assert matches_phi("CLEVE1AN", terms)
    for word in ("LIVER", "BREAST", "GENERAL", "SAGITTAL", "ANNAS"[:3]):  # annotations stay annotations
        assert not matches_phi(word, terms), word
