"""DICOM SEG and Comprehensive 3D SR from highdicom: valid for dciodvfy, referencing the source series, values kept."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest

from medsight.image import Image
from medsight.io import read_image
from medsight.io.dicom_out import Algorithm, DicomOutError, Segment, build_seg, build_sr

from .conftest import require_tool


def _errors(path) -> list[str]:
    r = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


REASON = ("2 of 2 lesion(s): low confidence (mean probability 0.55 < 0.60), high uncertainty (entropy 0.71 nats "
          "> 0.60), out of distribution (Mahalanobis 41.2 > 30.0)")  # 159 characters: more than one LO value


def _warnings(path) -> list[str]:
    r = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Warning")]


def _objects(ct_series, tmp_path):
    image = read_image(ct_series)
    source = [pydicom.dcmread(p) for p in sorted(ct_series.glob("*.dcm"))]
    lab = np.zeros(image.array.shape, np.uint8)
    lab[40:60, 30:50, 2:5] = 1  # i (columns), j (rows), k (slices)
    lab[38:62, 28:45, 3] = 1  # lesion 1 is largest on slice 3: 20x20 + a wider band, 508 pixels
    lab[80:90, 80:90, 6:8] = 2  # a second lesion: its own segment
    algo = Algorithm("toy-seg", "a" * 64, parameters={"version": "3"})
    seg = build_seg(source, Image(lab, image.geometry, image.provenance), [Segment(1, "lesion 1"),
                                                                           Segment(2, "lesion 2")], algo, "job-1")
    rows = [{"lesion_id": 1, "segment_number": 1, "volume_ml": 0.872, "longest_diameter_mm": 21.5,
             "mean_probability": 0.81},
            {"lesion_id": 2, "segment_number": 2, "volume_ml": 0.1, "longest_diameter_mm": 9.0,
             "mean_probability": 0.55}]
    sr = build_sr(source, algo, "job-1", findings=rows, probability=0.93, referred=True,
                  referral_reason=REASON, seg=seg)
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    return image, source, lab, seg, sr


def test_seg_and_sr_pass_dciodvfy(ct_series, tmp_path):
    _objects(ct_series, tmp_path)
    assert _errors(ct_series / "slice_00.dcm") == []  # the input is clean, so any error would be ours
    assert _errors(tmp_path / "seg.dcm") == []
    assert _errors(tmp_path / "sr.dcm") == []
    inherited = set(_warnings(ct_series / "slice_00.dcm"))  # CT_small's Patient's Weight of 0, copied as is
    assert set(_warnings(tmp_path / "seg.dcm")) <= inherited and set(_warnings(tmp_path / "sr.dcm")) <= inherited


def test_each_lesion_has_its_own_segment_tracking_id_and_the_whole_reason(ct_series, tmp_path):
    _, _, lab, seg, sr = _objects(ct_series, tmp_path)
    back = pydicom.dcmread(tmp_path / "seg.dcm")
    assert back.SeriesDescription == "medsight toy-seg segmentation"
    assert [s.SegmentNumber for s in back.SegmentSequence] == [1, 2]
    per_segment = {}
    for f, item in enumerate(back.PerFrameFunctionalGroupsSequence):
        n = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        per_segment[n] = per_segment.get(n, 0) + int(back.pixel_array[f].sum())
    assert per_segment == {1: int((lab == 1).sum()), 2: int((lab == 2).sum())}
    report = pydicom.dcmread(tmp_path / "sr.dcm")
    assert report.SeriesDescription == "medsight toy-seg report"
    groups, params = [], []

    def walk(items, group=None):
        for it in items:
            name = it.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in it else ""
            if name == "Measurement Group":
                group = {}
                groups.append(group)
            if group is not None and name == "Tracking Unique Identifier":
                group["uid"] = it.UID
            if group is not None and name == "Tracking Identifier":
                group["id"] = it.TextValue
            ref = it.ReferencedSOPSequence[0] if it.ValueType == "IMAGE" else {}
            if group is not None and "ReferencedSegmentNumber" in ref:  # the volumetric group's SEG segment
                group["segment"] = int(ref.ReferencedSegmentNumber)
            if name == "Algorithm Parameters":
                params.append(it.TextValue)
            if "ContentSequence" in it:
                walk(it.ContentSequence, group)

    walk(report.ContentSequence)
    lesions = [g for g in groups if "segment" in g]
    assert sorted((g["id"], g["segment"]) for g in lesions) == [("lesion 1", 1), ("lesion 2", 2)]
    assert len({g["uid"] for g in lesions}) == 2
    reason = [p.split("]=", 1)[1] for p in dict.fromkeys(params) if p.startswith("referral_reason[")]
    assert "".join(reason) == REASON and all(len(p) <= 64 for p in params)


def test_seg_frames_match_the_label_map_on_the_source_slices(ct_series, tmp_path):
    image, source, lab, seg, _ = _objects(ct_series, tmp_path)
    back = pydicom.dcmread(tmp_path / "seg.dcm")
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    assert back.SegmentSequence[0].SegmentAlgorithmName == "toy-seg"
    frames = back.pixel_array  # (frames, rows, cols), one frame per source slice and segment
    groups = back.PerFrameFunctionalGroupsSequence
    assert len(groups) == 2 * lab.shape[2]
    for f, item in enumerate(groups):
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        n = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        k = int(round(image.geometry.world_to_index(np.array([*image.geometry.origin[:2], z]))[2]))
        np.testing.assert_array_equal(frames[f].astype(bool), (lab[:, :, k] == n).T)
    assert frames.sum() == (lab > 0).sum()


def test_sr_carries_measurements_and_referral(ct_series, tmp_path):
    _, source, _, seg, _ = _objects(ct_series, tmp_path)
    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    values = {}

    def walk(items):
        for it in items:
            name = it.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in it else ""
            if it.ValueType == "NUM":
                values.setdefault(name, []).append(float(it.MeasuredValueSequence[0].NumericValue))
            if it.ValueType == "CODE":
                values.setdefault(name, []).append(it.ConceptCodeSequence[0].CodeMeaning)
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(sr.ContentSequence)
    assert values["Volume"] == [pytest.approx(0.872), pytest.approx(0.1)]
    assert values["Diameter"] == [pytest.approx(21.5)] * 2 + [pytest.approx(9.0)] * 2  # volumetric + planar group
    assert sorted(values["Probability"]) == [pytest.approx(0.55), pytest.approx(0.81), pytest.approx(0.93)]
    assert values["Recommended Follow-up"] == ["Yes"]
    refs = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence for r in se.ReferencedSOPSequence}
    assert {d.SOPInstanceUID for d in source} | {seg.SOPInstanceUID} <= refs


def test_uids_are_deterministic_and_wrong_grid_is_refused(ct_series, tmp_path):
    _, source, lab, seg, sr = _objects(ct_series, tmp_path)
    _, _, _, seg2, sr2 = _objects(ct_series, tmp_path)
    assert (seg.SOPInstanceUID, sr.SOPInstanceUID) == (seg2.SOPInstanceUID, sr2.SOPInstanceUID)
    other = Image(lab, read_image(ct_series).geometry.__class__.identity(3), read_image(ct_series).provenance)
    with pytest.raises(DicomOutError, match="grid"):
        build_seg(source, other, [Segment(1, "lesion")], Algorithm("x", "y"), "job-2")


def test_each_lesion_has_a_planar_outline_on_its_largest_slice(ct_series, tmp_path):
    """OHIF lists only SR groups with image coordinates: one TID 1410 group per lesion, same tracking UID as its
    volumetric group, a closed POLYLINE along the lesion's pixel edges on the source image where it is largest."""
    image, source, lab, _, _ = _objects(ct_series, tmp_path)
    report = pydicom.dcmread(tmp_path / "sr.dcm")
    imaging = next(it for it in report.ContentSequence
                   if it.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements")
    planar, volumetric = {}, {}
    for group in imaging.ContentSequence:
        items = {it.ConceptNameCodeSequence[0].CodeValue: it for it in group.ContentSequence}
        if "112040" not in items:
            continue
        uid, name = items["112040"].UID, items["112039"].TextValue
        region = items.get("111030")  # Image Region
        if region is None:
            if any(it.ValueType == "IMAGE" for it in group.ContentSequence):
                volumetric[name] = uid
            continue
        assert region.ValueType == "SCOORD" and region.GraphicType == "POLYLINE"
        ref = region.ContentSequence[0].ReferencedSOPSequence[0]
        diameter = [float(it.MeasuredValueSequence[0].NumericValue) for it in group.ContentSequence
                    if it.ValueType == "NUM" and it.ConceptNameCodeSequence[0].CodeMeaning == "Diameter"]
        planar[name] = (uid, ref.ReferencedSOPInstanceUID, np.asarray(region.GraphicData, float).reshape(-1, 2),
                        diameter)
    assert volumetric.keys() == planar.keys() == {"lesion 1", "lesion 2"}
    slice_of = {d.SOPInstanceUID: int(round(float(image.geometry.world_to_index(
        np.asarray([float(v) for v in d.ImagePositionPatient]))[2]))) for d in source}
    # lesion 1 by hand: columns 38..61 x rows 28..44 (slice 3's band) over columns 40..59 x rows 30..49; pixel
    # (c, r) spans [c, c+1] x [r, r+1], so its outline runs along these corners, clockwise on screen
    uid, sop, pts, diameter = planar["lesion 1"]
    assert uid == volumetric["lesion 1"] and diameter == [pytest.approx(21.5)]
    assert slice_of[sop] == 3 and (lab[:, :, 3] == 1).sum() == 508 > (lab[:, :, 2] == 1).sum()
    ring = [(38, 28), (62, 28), (62, 45), (60, 45), (60, 50), (40, 50), (40, 45), (38, 45)]
    assert np.array_equal(pts[0], pts[-1]) and len(pts) == len(ring) + 1
    start = ring.index(tuple(pts[0]))
    assert [tuple(p) for p in pts[:-1]] == ring[start:] + ring[:start]
    # lesion 2: columns 80..89 x rows 80..89 on slices 6 and 7, the same size: the first (slice 6)
    uid, sop, pts, diameter = planar["lesion 2"]
    assert uid == volumetric["lesion 2"] and diameter == [pytest.approx(9.0)] and slice_of[sop] == 6
    assert sorted({tuple(p) for p in pts}) == [(80, 80), (80, 90), (90, 80), (90, 90)]
