"""De-identification must not make a valid object invalid: dicom3tools' dciodvfy before and after, per file.

The files are the real ones tests/deid uses: the pydicom / pydicom-data images the planted corpus is built from,
and the deid-data ultrasounds, secondary capture and veterinary DX (whose patient module makes ResponsiblePerson
and ResponsibleOrganization Type 2, where the Basic Profile says X). Error lines are compared with their
values blanked (UIDs and dates change by design); warnings are ignored.
"""

from __future__ import annotations

import csv
import shutil

import pydicom
import pytest

from medsight.deid.pseudonym import Pseudonymizer
from medsight.deid.run import REPORT_NAME, RunOptions, deidentify_folder
from medsight.synthetic.phi_corpus import usable_base_files

DEID_DATA = ["ultrasounds/GREYSCALE_IMAGE.dcm", "ultrasounds/RGB_IMAGE.dcm", "humans/ctbrain1.dcm",
             "humans/ctbrain2.dcm", "animals/cat.dcm"]


def test_no_new_dciodvfy_errors(tmp_path, key_file, deid_data_file, dciodvfy_errors):
    inputs = list(dict.fromkeys(usable_base_files(include_flagged=True))) + [deid_data_file(r) for r in DEID_DATA]
    pseudo, found, unreadable = Pseudonymizer.from_file(key_file), {}, []
    for i, path in enumerate(inputs):  # one run per file: some test files share a SOP Instance UID (same output)
        src, out = tmp_path / f"in{i}", tmp_path / f"out{i}"
        src.mkdir()
        shutil.copy(path, src / path.name)
        summary = deidentify_folder(src, out, pseudo, RunOptions(write_flagged=True), workers=1, quiet=True)
        assert summary.counts["written"] == 1, path
        with open(out / REPORT_NAME, newline="") as f:
            row = next(csv.DictReader(f))
        before = dciodvfy_errors(path)
        if any("read failed" in line for line in before):
            unreadable.append(path.name)  # dciodvfy stops early on the input: nothing to compare
            continue
        found[path.name] = dciodvfy_errors(out / row["output"]) - before
    # truncated on purpose, deflated (dciodvfy does not inflate), odd private blocks
    assert set(unreadable) <= {"MR_truncated.dcm", "image_dfl.dcm", "ctbrain1.dcm", "ctbrain2.dcm"}
    assert len(found) >= 16
    assert {name: errs for name, errs in found.items() if errs} == {}
    # the veterinary DX: without IOD_REQUIRED the profile's X would drop these Type 2C attributes
    # control: the veterinary DX with the two attributes simply removed (the profile's plain X) is made invalid
    ds = pydicom.dcmread(inputs[-1])
    del ds.ResponsiblePerson, ds.ResponsibleOrganization
    ds.save_as(tmp_path / "cat_removed.dcm")
    assert any("ResponsiblePerson" in line
               for line in dciodvfy_errors(tmp_path / "cat_removed.dcm") - dciodvfy_errors(inputs[-1]))


@pytest.mark.parametrize("keyword", ["ResponsiblePerson", "ResponsibleOrganization", "AcquisitionContextSequence"])
def test_iod_required_attributes_are_emptied_not_removed(keyword):
    from pydicom.datadict import tag_for_keyword

    from medsight.deid.profile import BASIC_PROFILE, Action, action_table

    assert BASIC_PROFILE[keyword] == "X"  # what the standard's table says
    assert action_table()[int(tag_for_keyword(keyword))] is Action.EMPTY  # what PS3.15 E.1.1 lets us do


def test_type3_sequences_with_x_option_are_removed_not_left_empty():
    from pydicom.datadict import tag_for_keyword

    from medsight.deid.profile import Action, action_table

    table = action_table()
    for kw in ("ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence", "InstitutionCodeSequence"):
        assert table[int(tag_for_keyword(kw))] is Action.REMOVE, kw
