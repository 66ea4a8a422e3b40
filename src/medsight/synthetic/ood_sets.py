"""Out-of-distribution test sets medsight builds itself, with no download.

- ``different_modality_images``: real clinical DICOM images shipped inside the installed ``pydicom`` and
  ``pydicom-data`` wheels (CT head/neck/pancreas, chest and extremity radiographs, shoulder and abdominal MR,
  ultrasound, nuclear medicine whole body) — other modalities or body parts than a brain-MR model saw. Each image
  is converted to grey, MONOCHROME1 inverted, and several views are taken (whole image and crops, frames of
  multi-frame files) so that the set has enough cases for an AUROC. Resampling to the model's input size is left to
  the model's own ``preprocess``.
- ``corrupt``: the in-distribution images with a documented corruption: Gaussian noise, Gaussian blur or
  intensity inversion.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsight.errors import ConfigError
from medsight.image import Geometry, Image, Provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OODSource:
    """One DICOM file shipped inside pydicom / pydicom-data, and what it shows."""

    filename: str
    modality: str
    body_part: str
    max_frames: int = 1


# One transfer syntax per distinct image (the packages ship the same pixels in several encodings).
# Head MR files (emri_small, MR_small) are left out on purpose: they are the same modality and body part.
SOURCES: tuple[OODSource, ...] = (
    OODSource("693_UNCI.dcm", "CT", "head"),
    OODSource("J2K_pixelrep_mismatch.dcm", "CT", "head"),
    OODSource("CT_small.dcm", "CT", "unknown (CT phantom/patient slice)"),
    OODSource("bad_sequence.dcm", "CT", "neck"),
    OODSource("explicit_VR-UN.dcm", "CT", "pancreas"),
    OODSource("eCT_Supplemental.dcm", "CT", "unknown", max_frames=2),
    OODSource("RG1_UNCI.dcm", "CR", "chest"),
    OODSource("RG3_UNCI.dcm", "CR", "extremity"),
    OODSource("MR2_UNCI.dcm", "MR", "shoulder"),
    OODSource("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR", "abdomen"),
    OODSource("examples_overlay.dcm", "MR", "abdomen"),
    OODSource("JPEG2000_UNC.dcm", "NM", "whole body"),
    OODSource("US1_UNCI.dcm", "US", "unknown"),
    OODSource("OBXXXX1A.dcm", "US", "obstetric"),
    OODSource("JPGLosslessP14SV1_1s_1f_8b.dcm", "US", "unknown"),
    OODSource("examples_palette.dcm", "US", "unknown"),
    OODSource("examples_rgb_color.dcm", "US", "unknown"),
    OODSource("examples_ybr_color.dcm", "US", "unknown", max_frames=4),
)

# (name, fraction of the short side kept, centre offset as a fraction of the free margin)
_VIEWS = (("whole", 1.0, (0.0, 0.0)), ("centre", 0.6, (0.0, 0.0)), ("upper-left", 0.5, (-1.0, -1.0)),
          ("lower-right", 0.5, (1.0, 1.0)))


def _find_local(filename: str) -> Path | None:
    """The shipped file on disk, or None. Never ``pydicom.data.get_testdata_file``: for a file that is not
    installed it may try to download it."""
    from pydicom.data import data_manager

    roots = [Path(data_manager.DATA_ROOT) / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data wheel's package
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p) / "data" for p in spec.submodule_search_locations]
    for root in roots:
        if (root / filename).is_file():
            return root / filename
    return None


def _grey_frames(ds, max_frames: int) -> Iterator[np.ndarray]:
    from pydicom.pixels import apply_rescale, convert_color_space

    arr = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = arr if n_frames > 1 else arr[None]
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    step = max(1, len(frames) // max_frames)
    for f in frames[::step][:max_frames]:
        if pi == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            f = apply_color_lut(f, ds)
        if pi.startswith("YBR") and f.ndim == 3 and ds.file_meta.TransferSyntaxUID.is_compressed is False:
            f = convert_color_space(f, pi, "RGB")
        g = np.asarray(f, dtype=np.float64)
        if g.ndim == 3:  # colour: luminance
            g = g[..., :3] @ np.array([0.299, 0.587, 0.114])
        elif "RescaleSlope" in ds:
            g = np.asarray(apply_rescale(f, ds), dtype=np.float64)
        if pi == "MONOCHROME1":
            g = g.max() + g.min() - g
        yield g


def different_modality_images(views: Sequence[str] | None = None) -> list[Image]:
    """Grey 2-D Images (index order [i=column, j=row], like medsight's readers) from the shipped DICOM files.

    ``views`` picks among "whole", "centre", "upper-left", "lower-right" (default: all four per frame).
    """
    import pydicom

    wanted = [v for v in _VIEWS if views is None or v[0] in views]
    out: list[Image] = []
    for src in SOURCES:
        path = _find_local(src.filename)
        if path is None:
            log.warning("OOD source %s is not installed (pydicom-data missing?); skipped", src.filename)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            frames = list(_grey_frames(ds, src.max_frames))
        for k, frame in enumerate(frames):
            for name, keep, (oy, ox) in wanted:
                crop = _crop(frame, keep, oy, ox)
                prov = Provenance(format="DICOM", modality=src.modality, body_part=src.body_part).with_step(
                    "ood_view", source=src.filename, frame=k, view=name)
                out.append(Image(np.ascontiguousarray(crop.T), Geometry.identity(2), prov))
    if not out:
        raise ConfigError("no OOD source image could be read; install pydicom-data (it ships the clinical DICOMs)")
    return out


def _crop(a: np.ndarray, keep: float, oy: float, ox: float) -> np.ndarray:
    """A square crop of side ``keep`` x the short side; offsets -1/0/1 put it at the start/centre/end."""
    if keep >= 1.0:
        return a
    side = int(min(a.shape) * keep)
    y0 = int(round((a.shape[0] - side) / 2 * (1 + oy)))
    x0 = int(round((a.shape[1] - side) / 2 * (1 + ox)))
    return a[y0:y0 + side, x0:x0 + side]


CORRUPTIONS = ("noise", "blur", "inversion")


def corrupt(image: Image, kind: str, severity: float = 1.0, seed: int = 0) -> Image:
    """A corrupted copy of ``image``; ``severity`` scales the default strength.

    - noise: additive Gaussian noise, sigma = severity x the standard deviation of the image's foreground
      (voxels above the 10th percentile), i.e. SNR ~ 1 at severity 1;
    - blur: Gaussian blur, sigma = severity x 2.5% of the image's longest side (in voxels);
    - inversion: intensities mirrored within the image's range (max + min - x), as from a wrong
      photometric interpretation or window.
    """
    a = np.asarray(image.array, dtype=np.float64)
    if kind == "noise":
        fg = a[a > np.percentile(a, 10)]
        sigma = severity * float(fg.std() if fg.size else a.std())
        b = a + np.random.default_rng(seed).normal(0.0, sigma, a.shape)
        params = {"sigma": sigma}
    elif kind == "blur":
        sigma = severity * 0.025 * max(a.shape)
        b = ndimage.gaussian_filter(a, sigma)
        params = {"sigma_voxels": sigma}
    elif kind == "inversion":
        b = a.max() + a.min() - a
        params = {}
    else:
        raise ConfigError(f"unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)}")
    return image.with_array(b.astype(image.array.dtype if image.array.dtype.kind == "f" else np.float32),
                            f"corrupt_{kind}", severity=severity, **params)
