"""Known deformations of real anatomy, for registration tests and benchmarks: the truth is the transform we applied.

``mni_pair`` takes the MNI ICBM152 2009a template shipped in the nilearn wheel (via the demo's cropped copy),
resamples it to a coarser grid (the fixed image), and builds the moving image by pushing it through a known
transform: a rotation about the volume centre, a shift and a smooth B-spline deformation. Grey/white-matter labels
are the argmax of (background, GM, WM) probability maps, each map resampled linearly before the argmax, so both
label maps are equally sharp. ``truth`` maps MOVING world points (LPS mm) to FIXED world points; a registration's
transform maps fixed to moving, so the target registration error at a moving landmark ``y`` is
``|R(truth(y)) - y|``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medsight.image import Geometry, Image, Provenance
from medsight.synthetic.demo import _template


@dataclass(frozen=True)
class Pair:
    fixed: Image
    fixed_labels: Image
    moving: Image
    moving_labels: Image
    truth: Any  # SimpleITK transform: moving world -> fixed world
    landmarks: np.ndarray  # (n, 3) moving world points (LPS mm) inside the brain


def downsampled_template(spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Geometry]:
    """(T1 in [0, 1], GM probability, WM probability, geometry) of the template on an isotropic ``spacing_mm`` grid."""
    tpl = _template()
    factor = 1.0 / spacing_mm
    zoom = lambda v: ndimage.zoom(ndimage.gaussian_filter(v, 0.4 * spacing_mm), factor, order=1)
    geom = Geometry((spacing_mm,) * 3, tpl.geometry.origin, tpl.geometry.direction)
    return zoom(tpl.t1), zoom(tpl.gm), zoom(tpl.wm), geom


def known_transform(geometry: Geometry, shape: tuple[int, ...], rotation_deg: float, shift_mm: float,
                    warp_mm: float, seed: int, scale: float = 0.0) -> Any:
    """Rotation (about a random axis through the grid centre) + shift (random direction) + optional anisotropic
    scaling (factors 1 +- ``scale``, random per axis: the affine case) + smooth B-spline warp whose control point
    displacements are N(0, warp_mm) per axis, on a 4x4x4-cell mesh."""
    import SimpleITK as sitk

    rng = np.random.default_rng([seed, 34])
    centre = geometry.index_to_world((np.asarray(shape) - 1) / 2.0)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction *= shift_mm / np.linalg.norm(direction)
    rigid = sitk.VersorRigid3DTransform()
    rigid.SetCenter([float(c) for c in centre])
    rigid.SetRotation([float(a) for a in axis], float(np.deg2rad(rotation_deg)))
    rigid.SetTranslation([float(v) for v in direction])
    ref = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    ref.SetSpacing(geometry.spacing)
    ref.SetOrigin(geometry.origin)
    ref.SetDirection([float(v) for v in geometry.direction_matrix.ravel()])
    bspline = sitk.BSplineTransformInitializer(ref, [4, 4, 4], order=3)
    params = rng.normal(0.0, warp_mm, len(bspline.GetParameters()))
    bspline.SetParameters([float(p) for p in params])
    composite = sitk.CompositeTransform(rigid)
    if scale:
        stretch = sitk.AffineTransform(3)
        stretch.SetCenter([float(c) for c in centre])
        stretch.SetMatrix([float(v) for v in np.diag(1.0 + rng.uniform(-scale, scale, 3)).ravel()])
        composite.AddTransform(stretch)
    if warp_mm:
        composite.AddTransform(bspline)  # warp first, then the stretch, then the rigid motion
    return composite


def _warp(volume: np.ndarray, geometry: Geometry, transform: Any, order: int = 1) -> np.ndarray:
    """``volume`` (on ``geometry``) resampled at transform(moving grid point), moving grid = the same grid."""
    import SimpleITK as sitk

    from medsight.registration.engine import to_sitk  # noqa: PLC0415 - synthetic sits beside registration

    img = to_sitk(Image(volume.astype(np.float32), geometry))
    out = sitk.Resample(img, img, transform, sitk.sitkLinear if order else sitk.sitkNearestNeighbor, 0.0)
    return sitk.GetArrayFromImage(out).transpose()


def _labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    bg = np.clip(1.0 - gm - wm, 0.0, 1.0)
    return np.argmax(np.stack([bg, gm, wm]), axis=0).astype(np.uint8)


def mni_pair(spacing_mm: float = 2.5, rotation_deg: float = 12.0, shift_mm: float = 14.0, warp_mm: float = 3.0,
             seed: int = 0, n_landmarks: int = 50, scale: float = 0.0) -> Pair:
    """The template (fixed) and its known deformation (moving), with labels and landmarks; see the module doc."""
    t1, gm, wm, geom = downsampled_template(spacing_mm)
    truth = known_transform(geom, t1.shape, rotation_deg, shift_mm, warp_mm, seed, scale)
    prov = Provenance(format="simulated", modality="MR", protocol="MNI ICBM152 2009a T1 (nilearn)")
    mt1, mgm, mwm = (_warp(v, geom, truth) for v in (t1, gm, wm))
    return _pair(Image((t1 * 1000).astype(np.float32), geom, prov), _labels(gm, wm), (mt1 * 1000).astype(np.float32),
                 _labels(mgm, mwm), truth, seed, n_landmarks, dict(rotation_deg=rotation_deg, shift_mm=shift_mm,
                                                                   warp_mm=warp_mm, scale=scale))


def deformed_pair(fixed: Image, fixed_labels: np.ndarray, rotation_deg: float = 12.0, shift_mm: float = 14.0,
                  warp_mm: float = 3.0, seed: int = 0, n_landmarks: int = 50, scale: float = 0.0) -> Pair:
    """Any volume (e.g. a real CT) and its label map through a known transform; labels are carried by nearest
    neighbour (for masks without probability maps)."""
    truth = known_transform(fixed.geometry, fixed.shape, rotation_deg, shift_mm, warp_mm, seed, scale)
    moving = _warp(np.asarray(fixed.array, np.float32), fixed.geometry, truth)
    moving_labels = _warp(np.asarray(fixed_labels, np.float32), fixed.geometry, truth, order=0).astype(np.uint8)
    return _pair(fixed, np.asarray(fixed_labels, np.uint8), moving, moving_labels, truth, seed, n_landmarks,
                 dict(rotation_deg=rotation_deg, shift_mm=shift_mm, warp_mm=warp_mm, scale=scale))


def _pair(fixed: Image, fixed_labels: np.ndarray, moving: np.ndarray, moving_labels: np.ndarray, truth: Any, seed: int,
          n_landmarks: int, params: dict[str, float]) -> Pair:
    geom = fixed.geometry
    mov = Image(moving, geom, fixed.provenance.with_step("known_deformation", seed=seed, **params))
    rng = np.random.default_rng([seed, 35])
    inside = np.argwhere(ndimage.binary_erosion(moving_labels > 0, iterations=2))
    picks = inside[rng.choice(len(inside), size=min(n_landmarks, len(inside)), replace=False)]
    return Pair(fixed, Image(fixed_labels, geom, fixed.provenance), mov, Image(moving_labels, geom, mov.provenance),
                truth, geom.index_to_world(picks.astype(float)))


def target_errors(pair: Pair, estimated: Any) -> np.ndarray:
    """Target registration error (mm) at each landmark: |estimated(truth(y)) - y|."""
    out = []
    for y in pair.landmarks:
        x = pair.truth.TransformPoint([float(v) for v in y])
        out.append(np.linalg.norm(np.asarray(estimated.TransformPoint(x)) - y))
    return np.asarray(out)
