"""The one image model every reader produces and every later step consumes.

Conventions (the same as ITK, SimpleITK and nibabel index order):
- ``Image.array`` is indexed ``[i, j]`` or ``[i, j, k]``: ``i`` runs along the image rows' direction (DICOM column
  index, "x"), ``j`` down the columns (DICOM row index, "y"), ``k`` across slices. An RGB image carries one more,
  trailing axis of colour channels.
- World coordinates are millimetres in the DICOM patient frame LPS (+x = patient left, +y = posterior,
  +z = superior): ``world = origin + direction @ (spacing * index)``, where column ``a`` of ``direction`` is the
  unit vector of index axis ``a``. NIfTI's RAS frame is converted explicitly in ``medsight.io.nifti``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medsight.errors import GeometryError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Where each voxel sits in the patient: spacing (mm), origin (mm, LPS) and direction cosines."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        n = len(self.spacing)
        if n not in (2, 3):
            raise GeometryError(f"images must have 2 or 3 spatial axes, got {n}")
        if len(self.origin) != n or len(self.direction) != n or any(len(r) != n for r in self.direction):
            raise GeometryError(f"spacing, origin and direction disagree on the number of axes ({n})")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise GeometryError(f"voxel spacing must be positive and finite, got {self.spacing}")
        d = np.asarray(self.direction, dtype=float)
        if not np.allclose(np.abs(np.linalg.det(d)), 1.0, atol=1e-3):
            raise GeometryError("direction cosines are not orthonormal; the image orientation is corrupt")

    @classmethod
    def identity(cls, ndim: int, spacing: tuple[float, ...] | None = None) -> "Geometry":
        """Axis-aligned geometry at the origin, for images that carry no position (PNG, JPEG)."""
        sp = tuple(float(s) for s in (spacing or (1.0,) * ndim))
        return cls(sp, (0.0,) * ndim, tuple(tuple(float(v) for v in row) for row in np.eye(ndim)))

    @classmethod
    def from_affine(cls, affine: np.ndarray) -> "Geometry":
        """Split an LPS homogeneous affine (index -> world) into spacing, origin and direction."""
        a = np.asarray(affine, dtype=float)
        n = a.shape[0] - 1
        linear = a[:n, :n]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing <= 0):
            raise GeometryError("the affine has a zero-length axis")
        direction = linear / spacing
        return cls(
            tuple(float(s) for s in spacing),
            tuple(float(v) for v in a[:n, n]),
            tuple(tuple(float(v) for v in row) for row in direction),
        )

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    @property
    def affine(self) -> np.ndarray:
        """Homogeneous index -> LPS world matrix."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = self.direction_matrix * np.asarray(self.spacing)
        a[:n, n] = self.origin
        return a

    def ras_affine(self) -> np.ndarray:
        """Homogeneous index -> RAS world matrix, as NIfTI stores it (3D only)."""
        if self.ndim != 3:
            raise GeometryError("RAS affines are defined for 3D images only")
        flip = np.eye(4)
        flip[:3, :3] = _LPS_TO_RAS
        return flip @ self.affine

    @classmethod
    def from_ras_affine(cls, affine: np.ndarray) -> "Geometry":
        flip = np.eye(4)
        flip[:3, :3] = _LPS_TO_RAS
        return cls.from_affine(flip @ np.asarray(affine, dtype=float))

    def index_to_world(self, index: np.ndarray | tuple[float, ...]) -> np.ndarray:
        """World (LPS, mm) positions of continuous indices; accepts one index or an (N, ndim) array."""
        idx = np.asarray(index, dtype=float)
        lin = self.direction_matrix * np.asarray(self.spacing)
        return idx @ lin.T + np.asarray(self.origin)

    def world_to_index(self, world: np.ndarray | tuple[float, ...]) -> np.ndarray:
        lin = self.direction_matrix * np.asarray(self.spacing)
        return (np.asarray(world, dtype=float) - np.asarray(self.origin)) @ np.linalg.inv(lin).T

    def orientation_code(self) -> str:
        """Three-letter code of the patient direction each index axis points to most, e.g. 'LPS' or 'RAS'."""
        letters = (("L", "R"), ("P", "A"), ("S", "I"))
        code = ""
        for axis in self.direction_matrix.T:
            dominant = int(np.argmax(np.abs(axis)))
            code += letters[dominant][0 if axis[dominant] > 0 else 1]
        return code

    def to_dict(self) -> dict[str, Any]:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": [list(r) for r in self.direction]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(tuple(r) for r in d["direction"]))


@dataclass(frozen=True)
class SourceFile:
    """One input file and its SHA-256, so any result can be traced to the exact bytes it came from."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ProcessingStep:
    """One transformation applied to the voxels (resampling, normalisation, de-identification...)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    at: str = ""


@dataclass(frozen=True)
class Provenance:
    """What made an image: source files, scanner and protocol, and every processing step since.

    Holds no patient identifiers; everything here is safe to write into model artifacts and reports.
    """

    source_files: tuple[SourceFile, ...] = ()
    format: str = ""
    modality: str = ""
    manufacturer: str = ""
    scanner_model: str = ""
    protocol: str = ""
    series_description: str = ""
    series_uid: str = ""
    body_part: str = ""
    acquisition: dict[str, Any] = field(default_factory=dict)
    steps: tuple[ProcessingStep, ...] = ()

    def with_step(self, name: str, **params: Any) -> "Provenance":
        """A copy with one more processing step recorded (time-stamped in UTC)."""
        at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return replace(self, steps=self.steps + (ProcessingStep(name, _jsonable(params), at),))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_files": [{"path": s.path, "sha256": s.sha256} for s in self.source_files],
            "format": self.format,
            "modality": self.modality,
            "manufacturer": self.manufacturer,
            "scanner_model": self.scanner_model,
            "protocol": self.protocol,
            "series_description": self.series_description,
            "series_uid": self.series_uid,
            "body_part": self.body_part,
            "acquisition": _jsonable(self.acquisition),
            "steps": [{"name": s.name, "params": s.params, "at": s.at} for s in self.steps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Provenance":
        return cls(
            source_files=tuple(SourceFile(s["path"], s["sha256"]) for s in d.get("source_files", [])),
            format=d.get("format", ""),
            modality=d.get("modality", ""),
            manufacturer=d.get("manufacturer", ""),
            scanner_model=d.get("scanner_model", ""),
            protocol=d.get("protocol", ""),
            series_description=d.get("series_description", ""),
            series_uid=d.get("series_uid", ""),
            body_part=d.get("body_part", ""),
            acquisition=dict(d.get("acquisition", {})),
            steps=tuple(ProcessingStep(s["name"], dict(s.get("params", {})), s.get("at", "")) for s in d.get("steps", [])),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Image:
    """Voxels that never travel without their geometry and provenance."""

    array: np.ndarray
    geometry: Geometry
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        spatial = self.array.ndim - (1 if self.is_multichannel else 0)
        if spatial != self.geometry.ndim:
            raise GeometryError(
                f"array of shape {self.array.shape} does not fit a {self.geometry.ndim}D geometry"
            )

    @property
    def is_multichannel(self) -> bool:
        """True for colour images: one trailing axis of 3 or 4 channels beyond the spatial axes."""
        return self.array.ndim == self.geometry.ndim + 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape (channels excluded)."""
        return tuple(self.array.shape[: self.geometry.ndim])

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.geometry.spacing

    def world(self, index: np.ndarray | tuple[float, ...]) -> np.ndarray:
        return self.geometry.index_to_world(index)

    def with_array(self, array: np.ndarray, step: str, **params: Any) -> "Image":
        """Same geometry, new voxels, and the step that made them recorded in the provenance."""
        return Image(array, self.geometry, self.provenance.with_step(step, **params))


def _jsonable(value: Any) -> Any:
    """Convert NumPy scalars/arrays and tuples so that provenance always serialises to JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
