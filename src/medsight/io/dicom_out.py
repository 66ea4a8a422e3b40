"""DICOM objects out, built with highdicom: a SEG of a label map and a Comprehensive 3D SR (TID 1500) of findings.

Why highdicom rather than hand-built datasets: it fills the IOD's required modules (Enhanced General Equipment,
Multi-frame Functional Groups, SR document tree) the way viewers and `dciodvfy` expect, and references the source
series properly. UIDs are derived from the caller's ``uid_seed`` (the service's: study, series, package), so
writing the same result twice gives the same SOP Instance UIDs and a PACS stores it once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medsight.errors import MedsightError
from medsight.image import Image
from medsight.io.sr_planar import Outline, segment_outlines

MANUFACTURER = "medsight"


class DicomOutError(MedsightError):
    """A result could not be expressed as a DICOM object (wrong grid, no source images)."""


@dataclass(frozen=True)
class Segment:
    """One label value of the map: what it is, coded (SNOMED CT where a code exists)."""

    label: int
    name: str
    property_type: tuple[str, str, str] = ("52988006", "SCT", "Lesion")  # (code, scheme, meaning)
    property_category: tuple[str, str, str] = ("49755003", "SCT", "Morphologically Abnormal Structure")


@dataclass(frozen=True)
class Algorithm:
    """The model that made the result, as DICOM's Algorithm Identification records it."""

    name: str
    version: str  # the model package id (or its registered version)
    family: tuple[str, str, str] = ("123109", "DCM", "Artificial Intelligence")
    parameters: dict[str, str] = field(default_factory=dict)


def uid_for(seed: str, kind: str) -> str:
    """A deterministic DICOM UID for ``kind`` ("seg", "sr", "series-seg"...) of one result: the 2.25 root with
    128 bits of SHA-256 over (seed, kind) as a UUID-sized integer (PS3.5 B.2)."""
    digest = hashlib.sha256(f"{seed}\0{kind}".encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


def _code(t: tuple[str, str, str]):  # noqa: ANN202 - highdicom CodedConcept
    import highdicom as hd

    return hd.sr.CodedConcept(value=t[0], scheme_designator=t[1], meaning=t[2])


def sort_source_by_slice(source: Sequence[Dataset], labels: Image) -> list[tuple[int, Dataset]]:
    """Each source image with the slice index ``k`` of ``labels`` it lies on (from ImagePositionPatient)."""
    if not source:
        raise DicomOutError("no source images to reference; the SEG must point at the series it segments")
    out = []
    for ds in source:
        ipp = getattr(ds, "ImagePositionPatient", None)
        if ipp is None:
            raise DicomOutError("a source image has no ImagePositionPatient; it cannot be matched to the label map")
        idx = labels.geometry.world_to_index(np.asarray([float(v) for v in ipp]))
        k = int(round(float(idx[2]))) if labels.array.ndim == 3 else 0
        if abs(idx[0]) > 0.5 or abs(idx[1]) > 0.5 or not 0 <= k < (labels.array.shape[2] if labels.array.ndim == 3 else 1):
            raise DicomOutError("the label map is not on the source series' grid; predict on the series itself")
        out.append((k, ds))
    out.sort(key=lambda t: t[0])
    return out


def build_seg(source: Sequence[Dataset], labels: Image, segments: Sequence[Segment], algorithm: Algorithm,
              uid_seed: str, series_number: int = 901, series_description: str | None = None) -> Dataset:
    """A binary DICOM SEG with one segment per entry of ``segments``, frames aligned to the source slices."""
    import highdicom as hd

    pairs = sort_source_by_slice(source, labels)
    arr = np.asarray(labels.array)
    if arr.ndim == 2:
        arr = arr[..., None]
    frames = np.stack([arr[:, :, k].T for k, _ in pairs])  # (slices, rows, cols)
    mask = np.zeros(frames.shape + (len(segments),), dtype=bool)
    for s, seg in enumerate(segments):
        mask[..., s] = frames == seg.label
    algo = hd.AlgorithmIdentificationSequence(name=algorithm.name, family=_code(algorithm.family),
                                              version=algorithm.version[:64],
                                              parameters=dict(algorithm.parameters) or None)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=seg.name[:64],
        segmented_property_category=_code(seg.property_category),
        segmented_property_type=_code(seg.property_type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo) for i, seg in enumerate(segments)]
    out = hd.seg.Segmentation(
        source_images=[ds for _, ds in pairs], pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=uid_for(uid_seed, "series-seg"), series_number=series_number,
        sop_instance_uid=uid_for(uid_seed, "seg"), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64], software_versions=algorithm.version[:64],
        device_serial_number="0", omit_empty_frames=False,
        content_description=f"medsight {algorithm.name}"[:64], content_label="MEDSIGHT")
    out.SeriesDescription = (series_description or f"medsight {algorithm.name} segmentation")[:64]
    return out


def text_parameters(key: str, text: str, width: int = 64) -> list[str]:
    """``text`` as ``key=...`` parameters of at most ``width`` characters each (LO), numbered when it needs
    several, so nothing is cut: ``referral_reason[1/3]=...``."""
    first = f"{key}={text}"
    if len(first) <= width:
        return [first]
    n = 1
    while True:  # the prefix grows with the count's digits; find the smallest count that fits
        prefix = len(f"{key}[{n}/{n}]=")
        size = width - prefix
        need = -(-len(text) // size)
        if need <= n:
            return [f"{key}[{i + 1}/{n}]={text[i * size:(i + 1) * size]}" for i in range(need)]
        n = need


def _planar_group(drawn: Outline, tracking: Any, sop_class_uid: str, algo: Any, diameter_mm: float) -> Any:
    """A TID 1410 planar ROI group: the outline as a closed POLYLINE Image Region on its source image."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                               graphic_data=np.asarray(drawn.points, float),
                               source_image=hd.sr.SourceImageForRegion(sop_class_uid, drawn.sop_instance_uid))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=codes.SCT.Lesion, algorithm_id=algo,
        measurements=[hd.sr.Measurement(name=codes.SCT.Diameter, value=diameter_mm, unit=codes.UCUM.Millimeter,
                                        algorithm_id=algo)])


def build_sr(source: Sequence[Dataset], algorithm: Algorithm, uid_seed: str, *,
             findings: Sequence[dict[str, Any]] = (), probability: float | None = None,
             referred: bool | None = None, referral_reason: str = "", seg: Dataset | None = None,
             series_number: int = 902, series_description: str | None = None) -> Dataset:
    """A Comprehensive 3D SR (TID 1500 Measurement Report) of the model's findings.

    ``findings`` are lesion rows (keys lesion_id, segment_number, volume_ml, longest_diameter_mm, mean_probability);
    each becomes a volumetric ROI group referencing its SEG segment and, with ``seg``, a planar ROI group (same
    tracking UID, its longest diameter) outlining the segment on the source image where it is largest: viewers
    such as OHIF list and draw only groups with image coordinates. The class probability and the referral are
    study-level measurements/evaluations. Free text (the referral reason) goes into the algorithm parameters, the
    only place TID 1500 leaves for it without private codes.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not source:
        raise DicomOutError("no source images to reference in the SR")
    parameters = [f"package={algorithm.version}"[:64]]
    if referral_reason:  # whole, over as many parameters as it needs
        parameters += text_parameters("referral_reason", referral_reason)
    algo = hd.sr.AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.version[:64],
                                         parameters=parameters)
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=uid_for(uid_seed, "device"), name=algorithm.name[:64],
                                                       manufacturer_name=MANUFACTURER)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    groups: list[Any] = []
    outlines = segment_outlines(seg) if seg is not None and findings else {}
    sop_class = {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in source}
    for row in findings:
        tracking = hd.sr.TrackingIdentifier(  # a caller tracking lesions over time passes its own UID and name
            uid=row.get("tracking_uid") or uid_for(uid_seed, f"lesion-{row['lesion_id']}"),
            identifier=row.get("tracking_identifier") or f"lesion {row['lesion_id']}")
        measurements = [
            hd.sr.Measurement(name=codes.SCT.Volume, value=float(row["volume_ml"]),
                              unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"), algorithm_id=algo),
            hd.sr.Measurement(name=codes.SCT.Diameter, value=float(row["longest_diameter_mm"]),
                              unit=codes.UCUM.Millimeter, algorithm_id=algo, qualifier=None),
        ]
        if row.get("mean_probability") is not None:
            measurements.append(hd.sr.Measurement(name=codes.DCM.Probability, value=float(row["mean_probability"]),
                                                  unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                                                  algorithm_id=algo))
        ref = None
        if seg is not None:
            ref = hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                          segment_number=int(row.get("segment_number", 1)),
                                          source_series=hd.sr.SourceSeriesForSegmentation(
                                              source[0].SeriesInstanceUID))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_segment=ref, finding_type=codes.SCT.Lesion,
            algorithm_id=algo, measurements=measurements))
        drawn = outlines.get(int(row.get("segment_number", 1)))
        if drawn is not None:  # the same lesion (same tracking UID) as a planar ROI that viewers can list and draw
            if drawn.sop_instance_uid not in sop_class:
                raise DicomOutError("the SEG was made from images that are not the SR's source series")
            groups.append(_planar_group(drawn, tracking, sop_class[drawn.sop_instance_uid], algo,
                                        float(row["longest_diameter_mm"])))
    study_measurements, evaluations = [], []
    if probability is not None:
        study_measurements.append(hd.sr.Measurement(name=codes.DCM.Probability, value=float(probability),
                                                    unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                                                    algorithm_id=algo))
    if referred is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(codes.DCM.RecommendedFollowUp,
                                                       codes.SCT.Yes if referred else codes.SCT.No))
    if study_measurements or evaluations:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid_for(uid_seed, "study-finding"),
                                                         identifier="study-level finding"),
            finding_type=codes.DCM.Finding, algorithm_id=algo, measurements=study_measurements or None,
            qualitative_evaluations=evaluations or None))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=groups or None)
    evidence = list(source) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(evidence=evidence, content=report,
                                 series_instance_uid=uid_for(uid_seed, "series-sr"), series_number=series_number,
                                 sop_instance_uid=uid_for(uid_seed, "sr"), instance_number=1,
                                 manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = (series_description or f"medsight {algorithm.name} report")[:64]
    return sr
