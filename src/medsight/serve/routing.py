"""Which series of a study a served package reads, and which package runs: rules, not the folder's first series.

A real study holds several series: a localizer, more sequences, and SEG/SR objects from an earlier run (ours or
another's). Each series is described from its headers only; the ones no model should ever read (non-image
objects, secondary captures, DERIVED images, localizers/scouts, slices that form no volume) are excluded with a
reason. Each package declares the input it takes (``InputSpec``: modalities, dimensionality, slice count, planes,
description patterns to refuse), from its manifest's ``extra["input"]`` or, failing that, from its plan/config.
A study is matched to the served packages that fit; none fitting is an ``Unsupported`` answer that names why.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medsight.errors import MedsightError

NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG",
                                  "FID", "AU", "ECG", "HD", "PLAN", "RWV"})
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants (…7.1 to …7.4)
LOCALIZER = re.compile(r"\b(localizer|localiser|loc|scout|survey|topogram|scanogram|pilot|3[- ]?plane)\b", re.I)
PLANES = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}


class Unsupported(MedsightError):
    """No served package fits any series of the study; the message says what the study holds and what fits."""


@dataclass(frozen=True)
class InputSpec:
    """What a package reads. Empty ``modalities``/``planes`` mean any; ``dims`` 3 = a volume, 2 = one image."""

    dims: int = 3
    modalities: tuple[str, ...] = ()
    min_slices: int = 5
    planes: tuple[str, ...] = ()
    refuse_descriptions: str = ""  # a regular expression matched against SeriesDescription

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        from medsight.errors import ConfigError

        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown input rule(s) {', '.join(sorted(unknown))}; known: "
                              f"{', '.join(cls.__dataclass_fields__)}")
        spec = cls(dims=int(d.get("dims", 3)), modalities=tuple(str(m).upper() for m in d.get("modalities", ())),
                   min_slices=int(d.get("min_slices", 5 if int(d.get("dims", 3)) == 3 else 1)),
                   planes=tuple(d.get("planes", ())), refuse_descriptions=str(d.get("refuse_descriptions", "")))
        if spec.dims not in (2, 3) or set(spec.planes) - {"axial", "coronal", "sagittal"}:
            raise ConfigError(f"input rule dims must be 2 or 3 and planes axial/coronal/sagittal, got {d}")
        return spec


def spec_for_package(pkg: Any) -> InputSpec:  # noqa: ANN401 - medsight.package.Package
    """The package's declared input, else what its plan (segmentation) or config (classification) implies."""
    declared = pkg.extra.get("input")
    if declared:
        return InputSpec.from_dict(declared)
    if pkg.task == "classification" and pkg.has("config.json"):
        dims = int(pkg.read_json("config.json").get("spatial_dims", 2))
        return InputSpec(dims=dims, min_slices=5 if dims == 3 else 1)
    modalities: tuple[str, ...] = ()
    if pkg.has("plan.json"):  # a CT-normalised plan (Hounsfield clip) reads CT only
        norm = pkg.read_json("plan.json").get("normalisation") or {}
        if norm and all(str(v.get("scheme")) == "ct" for v in norm.values()):
            modalities = ("CT",)
    return InputSpec(dims=3, modalities=modalities)


@dataclass(frozen=True)
class Series:
    """One series of a study as the router sees it; ``excluded`` says why no model may read it."""

    uid: str
    modality: str
    description: str
    slices: int
    plane: str | None
    excluded: str | None = None

    def label(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.modality or '?'}{desc} ({self.slices} slice(s))"


@dataclass(frozen=True)
class StudyInfo:
    """What the worklist shows of a study, from its DICOM headers."""

    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    accession: str = ""
    study_date: str = ""
    modalities: str = ""
    description: str = ""
    series: tuple[Series, ...] = field(default_factory=tuple)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "series"} | {
            "series": [{"uid": s.uid, "modality": s.modality, "description": s.description, "slices": s.slices,
                        "excluded": s.excluded} for s in self.series]}


def _text(ds: Any, name: str) -> str:  # noqa: ANN401
    return str(getattr(ds, name, "") or "").strip()


def _exclusion(info: Any, ds: Any) -> str | None:  # noqa: ANN401
    """Why no model may read this series, or None."""
    image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
    sop_class = _text(ds, "SOPClassUID")
    if info.modality.upper() in NON_IMAGE_MODALITIES or not info.has_pixels:
        return f"a {info.modality or 'non-image'} object, not an image"
    if sop_class.startswith(SECONDARY_CAPTURE):
        return "a secondary capture (screenshot), not acquired pixels"
    if image_type and image_type[0] == "DERIVED":
        return "a DERIVED image (reformat, map or result), not the acquisition"
    if "LOCALIZER" in image_type or LOCALIZER.search(info.description or ""):
        return "a localizer/scout"
    if info.problem:
        return f"its slices form no image ({info.problem.split(';')[0][:120]})"
    return None


def describe_study(folder: Path) -> StudyInfo:
    """Every series of the study folder, from headers only, with the study's identifying fields."""
    import pydicom

    from medsight.io.dicom import list_series

    series, first = [], None
    for info in list_series(folder):
        ds = pydicom.dcmread(info.files[0], stop_before_pixels=True) if info.files else None
        first = first or ds
        shape = info.shape or ()
        slices = int(shape[2]) if len(shape) == 3 else (1 if info.has_pixels else 0)
        plane = PLANES.get(info.orientation[2]) if info.orientation and len(info.orientation) == 3 else None
        series.append(Series(info.series_uid, info.modality.upper(), info.description, slices, plane,
                             _exclusion(info, ds)))
    series.sort(key=lambda s: (s.excluded is not None, -s.slices, s.uid))
    ds = first
    return StudyInfo(study_uid=_text(ds, "StudyInstanceUID"), patient_name=_text(ds, "PatientName").replace("^", " "),
                     patient_id=_text(ds, "PatientID"), accession=_text(ds, "AccessionNumber"),
                     study_date=_text(ds, "StudyDate"),
                     modalities="/".join(sorted({s.modality for s in series if s.excluded is None and s.modality})),
                     description=_text(ds, "StudyDescription"), series=tuple(series))


def misfit(spec: InputSpec, s: Series) -> str | None:
    """Why ``s`` does not fit ``spec``, or None when it does."""
    if s.excluded:
        return s.excluded
    if spec.modalities and s.modality not in spec.modalities:
        return f"modality {s.modality}, the model reads {'/'.join(spec.modalities)}"
    if spec.dims == 2 and s.slices != 1:
        return f"{s.slices} slices, the model reads one 2D image"
    if spec.dims == 3 and s.slices < spec.min_slices:
        return f"{s.slices} slice(s), the model needs a volume of at least {spec.min_slices}"
    if spec.planes and s.plane not in spec.planes:
        return f"{s.plane or 'oblique'} slices, the model reads {'/'.join(spec.planes)}"
    if spec.refuse_descriptions and re.search(spec.refuse_descriptions, s.description or "", re.I):
        return f"description '{s.description}' is refused by the model's rules"
    return None


def route(study: StudyInfo, models: list[Any], named: Any | None = None) -> tuple[Any, Series]:  # noqa: ANN401
    """The (model, series) to run: ``named`` on its best series, else the best fit among ``models``.

    Best: a model that names the series' modality before a model that accepts any, then the series with the most
    slices, then the model's name. ``models`` are ModelRefs whose ``input`` holds an InputSpec dict.
    """
    candidates, why = [], []
    for m in [named] if named is not None else models:
        spec = InputSpec.from_dict(m.input or {})
        for s in study.series:
            reason = misfit(spec, s)
            if reason is None:
                candidates.append(((not spec.modalities, -s.slices, m.name, s.uid), m, s))
            elif s.excluded is None:
                why.append(f"{m.name}@{m.version}: {s.label()}: {reason}")
    if candidates:
        _, model, series = min(candidates, key=lambda c: c[0])
        return model, series
    held = "; ".join(f"{s.label()}{' - ' + s.excluded if s.excluded else ''}" for s in study.series) or "nothing"
    if not models and named is None:
        raise Unsupported("no approved model is served here")
    raise Unsupported(f"no served model reads this study. It holds: {held}."
                      + (f" Model rules: {'; '.join(why[:6])}" if why else ""))


def result_key(study_uid: str, series_uid: str, package_id: str) -> str:
    """The identity of a result: the same series run by the same package version is the same result."""
    return hashlib.sha256(f"{study_uid}\n{series_uid}\n{package_id}".encode()).hexdigest()
