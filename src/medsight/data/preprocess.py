"""Turn a case into network input the way its plan says: stack channels, normalise, resample to the target grid.

Training and inference share this module, so a model always sees at prediction time exactly the preprocessing it
was trained with. Resampling uses linear interpolation for images and, for labels, linear interpolation of the
one-hot maps followed by argmax (as nnU-Net does), which keeps thin structures that nearest-neighbour would break.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medsight.data.dataset import Case
from medsight.errors import DatasetError
from medsight.image import Geometry, Image
from medsight.io.nifti import read_nifti
from medsight.plan.plan import ConfigPlan, Plan


@dataclass
class Preprocessed:
    image: np.ndarray  # (C, *shape) float32 on the plan's grid
    label: np.ndarray | None  # (*shape) int16 on the plan's grid
    original_shape: tuple[int, ...]
    geometry: Geometry  # of the original image


def target_shape(shape: tuple[int, ...], spacing: tuple[float, ...], cfg: ConfigPlan) -> tuple[int, ...]:
    """Shape on the configuration's grid; 2D configurations keep the slice axis (the last) as it is."""
    out = [max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, cfg.spacing)]
    return tuple(out + list(shape[len(cfg.spacing):]))


def resample(array: np.ndarray, shape: tuple[int, ...], is_label: bool = False, n_classes: int = 0) -> np.ndarray:
    """Resample a (C, *S) float array or an (*S) label array to ``shape`` (voxel centres aligned)."""
    src = tuple(array.shape[-len(shape):])
    if src == tuple(shape):
        return array
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    with torch.no_grad():
        if is_label:
            lab = torch.from_numpy(array.astype(np.int64))
            onehot = F.one_hot(lab, max(n_classes, int(lab.max()) + 1)).movedim(-1, 0).float()[None]
            out = F.interpolate(onehot, size=shape, mode=mode, align_corners=False)[0]
            return out.argmax(0).numpy().astype(np.int16)
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        return F.interpolate(t, size=shape, mode=mode, align_corners=False)[0].numpy()


def normalise(image: np.ndarray, plan: Plan) -> np.ndarray:
    """Per-channel normalisation named in the plan (CT: clip + dataset z-score; otherwise per-case z-score)."""
    out = np.empty_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        scheme = plan.normalisation[str(c)]
        x = image[c].astype(np.float32)
        if scheme["scheme"] == "ct":
            lo, hi = scheme["clip"]
            out[c] = (np.clip(x, lo, hi) - scheme["mean"]) / scheme["std"]
        else:
            out[c] = (x - x.mean()) / max(float(x.std()), 1e-6)
    return out


def load_images(paths: tuple, case_id: str) -> tuple[np.ndarray, Geometry]:
    arrays, geometry = [], None
    for p in paths:
        img = read_nifti(p, dtype=np.float32)
        if img.array.ndim != 3:
            raise DatasetError(f"case {case_id}: expected one 3D volume per channel file, got shape {img.array.shape}", p)
        if geometry is None:
            geometry = img.geometry
        elif img.array.shape != arrays[0].shape:
            raise DatasetError(f"case {case_id}: channel shapes differ ({img.array.shape} vs {arrays[0].shape})", p)
        arrays.append(img.array)
    return np.stack(arrays), geometry


def preprocess_arrays(image: np.ndarray, geometry: Geometry, plan: Plan, cfg: ConfigPlan,
                      label: np.ndarray | None = None) -> Preprocessed:
    shape = tuple(image.shape[1:])
    new_shape = target_shape(shape, geometry.spacing, cfg)
    img = resample(normalise(image, plan), new_shape)
    lab = None if label is None else resample(label, new_shape, is_label=True, n_classes=len(plan.labels))
    return Preprocessed(np.ascontiguousarray(img, dtype=np.float32), lab, shape, geometry)


def preprocess_case(case: Case, plan: Plan, cfg: ConfigPlan, with_label: bool = True) -> Preprocessed:
    image, geometry = load_images(case.images, case.case_id)
    label = None
    if with_label and case.label is not None:
        label = np.asarray(nib.load(str(case.label)).dataobj).astype(np.int16)
    return preprocess_arrays(image, geometry, plan, cfg, label)


def preprocess_image(image: Image | list[Image], plan: Plan, cfg: ConfigPlan) -> Preprocessed:
    images = image if isinstance(image, list) else [image]
    arr = np.stack([np.asarray(i.array, dtype=np.float32) for i in images])
    return preprocess_arrays(arr, images[0].geometry, plan, cfg)
