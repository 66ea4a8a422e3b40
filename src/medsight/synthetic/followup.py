"""Simulated follow-up pairs: one real anatomy (MNI ICBM152 2009a from nilearn) scanned twice, with lesions whose
volumes changed by known amounts between the scans, one new and one resolved.

The prior scan is the template on a ``spacing_mm`` grid; the current scan is the same head moved by a known rigid
motion (rotation about the centre + shift). Lesions are ellipsoids defined in the template's world (LPS mm) with
analytic volumes 4/3 pi a b c; in the current scan each is scaled by the cube root of its volume factor, and both
scans paint them on their own grids, so "truth" is the analytic volume, not a voxel count of our own making.
Lesions are bright (post-contrast-like, 1.35 x white matter) and get the label ``LESION`` in the label maps.
``write_dicom_series`` stores a volume as an MR series (one patient, one study) for the DICOM SR path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsight.image import Geometry, Image, Provenance
from medsight.synthetic.deform import downsampled_template

LESION = 1


@dataclass(frozen=True)
class SimLesion:
    name: str
    offset_mm: tuple[float, float, float]  # from the brain centre, template world (LPS)
    semi_axes_mm: tuple[float, float, float]
    volume_factor: float | None  # current / prior volume; None = resolved
    in_prior: bool = True

    @property
    def expected(self) -> str:
        if not self.in_prior:
            return "new"
        if self.volume_factor is None:
            return "resolved"
        return "growing" if self.volume_factor >= 1.728 else "shrinking" if self.volume_factor <= 0.343 else "stable"

    def volume_ml(self, when: str) -> float:
        base = 4.0 / 3.0 * np.pi * float(np.prod(self.semi_axes_mm)) / 1000.0
        if when == "prior":
            return base if self.in_prior else 0.0
        return 0.0 if self.volume_factor is None else base * (self.volume_factor if self.in_prior else 1.0)


LESIONS = (
    SimLesion("grows x2.5", (-30.0, -20.0, 10.0), (7.0, 6.0, 6.5), 2.5),
    SimLesion("shrinks x0.25", (28.0, -15.0, 12.0), (10.0, 9.0, 9.5), 0.25),
    SimLesion("stable", (-25.0, 25.0, -5.0), (8.0, 7.0, 7.5), 1.0),
    SimLesion("resolves", (25.0, 25.0, 0.0), (6.5, 6.0, 6.0), None),
    SimLesion("new", (0.0, -35.0, 25.0), (6.0, 6.5, 7.0), 1.0, in_prior=False),
)


@dataclass(frozen=True)
class SimPair:
    prior: Image
    prior_labels: Image
    current: Image
    current_labels: Image
    lesions: tuple[SimLesion, ...]
    centre: np.ndarray  # brain centre, template world (LPS mm)
    motion: object  # SimpleITK rigid transform: current world -> prior (template) world

    def where(self, lesion: SimLesion, when: str) -> np.ndarray:
        """The lesion's centre in the prior or current scan's world (LPS mm)."""
        at = self.centre + np.asarray(lesion.offset_mm)
        return at if when == "prior" else np.asarray(self.motion.GetInverse().TransformPoint([float(v) for v in at]))


def _motion(rotation_deg: float, shift_mm: tuple[float, float, float], centre: np.ndarray):  # noqa: ANN202
    import SimpleITK as sitk

    t = sitk.Euler3DTransform()
    t.SetCenter([float(c) for c in centre])
    t.SetRotation(0.0, 0.0, float(np.deg2rad(rotation_deg)))
    t.SetTranslation([float(v) for v in shift_mm])
    return t  # current world -> template world


def _paint(t1: np.ndarray, geom: Geometry, lesions: list[tuple[SimLesion, float]], centre: np.ndarray,
           motion=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(image, labels): each (lesion, linear scale) drawn where the grid point, moved into template world, falls
    inside the scaled ellipsoid."""
    idx = np.indices(t1.shape).reshape(3, -1).T.astype(float)
    world = geom.index_to_world(idx)
    if motion is not None:
        world = _apply_rigid(motion, world)
    img, lab = t1.copy(), np.zeros(t1.shape, np.uint8)
    wm_level = float(np.percentile(t1, 95))
    for les, scale in lesions:
        rel = (world - (centre + np.asarray(les.offset_mm))) / (np.asarray(les.semi_axes_mm) * scale)
        inside = (rel ** 2).sum(1).reshape(t1.shape) <= 1.0
        img[inside] = 1.35 * wm_level
        lab[inside] = LESION
    return img, lab


def _apply_rigid(t, pts: np.ndarray) -> np.ndarray:  # noqa: ANN001
    m = np.asarray(t.GetMatrix()).reshape(3, 3)
    c, tr = np.asarray(t.GetCenter()), np.asarray(t.GetTranslation())
    return (pts - c) @ m.T + c + tr


def followup_pair(spacing_mm: float = 1.5, rotation_deg: float = 5.0, shift_mm: tuple[float, float, float] = (6.0, -4.0, 3.0),
                  lesions: tuple[SimLesion, ...] = LESIONS, seed: int = 0) -> SimPair:
    """The prior and current scans with label maps (see the module doc)."""
    from medsight.registration.engine import resample

    t1, _, _, geom = downsampled_template(spacing_mm)
    centre = geom.index_to_world((np.asarray(t1.shape) - 1) / 2.0)
    motion = _motion(rotation_deg, shift_mm, centre)
    prior_les = [(les, 1.0) for les in lesions if les.in_prior]
    cur_les = [(les, (les.volume_factor if les.in_prior else 1.0) ** (1 / 3)) for les in lesions
               if les.volume_factor is not None]
    rng = np.random.default_rng([seed, 36])
    prov = Provenance(format="simulated", modality="MR", protocol="MNI ICBM152 2009a T1 + simulated lesions")
    p_img, p_lab = _paint(t1, geom, prior_les, centre)
    moved_t1 = resample(Image(t1.astype(np.float32), geom), geom, t1.shape, motion).array
    c_img, c_lab = _paint(moved_t1, geom, cur_les, centre, motion)
    noisy = lambda a: np.clip(np.round((a + rng.normal(0, 0.02, a.shape)) * 1000), 0, 32767).astype(np.int16)
    return SimPair(Image(noisy(p_img), geom, prov), Image(p_lab, geom, prov), Image(noisy(c_img), geom, prov),
                   Image(c_lab, geom, prov), tuple(lesions), centre, motion)


def write_dicom_series(image: Image, folder: Path, patient_id: str, study_seed: str, description: str) -> Path:
    """``image`` (int16 voxels) as an MR Image Storage series: one file per slice along k, geometry in the headers."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(entropy_srcs=[study_seed, "study"]), generate_uid(entropy_srcs=[study_seed, "series"])
    frame = generate_uid(entropy_srcs=[patient_id, "frame"])
    d = image.geometry.direction_matrix
    for k in range(image.shape[2]):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[study_seed, str(k)])
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, "Simulated^Patient", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.StudyDate, ds.StudyTime = ("20260101" if "prior" in study_seed else "20260701"), "120000"
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "MR", "medsight-sim", 1, k + 1
        ds.SeriesDescription = description
        ds.ImagePositionPatient = [f"{v:.4f}" for v in image.geometry.index_to_world((0.0, 0.0, float(k)))]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [f"{image.spacing[1]:g}", f"{image.spacing[0]:g}"]
        ds.SliceThickness = f"{image.spacing[2]:g}"
        plane = np.ascontiguousarray(np.asarray(image.array)[:, :, k].T.astype("<i2"))
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = plane.tobytes()
        ds.save_as(folder / f"slice_{k:03d}.dcm", enforce_file_format=True)
    return folder
