"""SimpleITK's registration framework driven in three multi-resolution stages: rigid, affine, B-spline.

Why SimpleITK: it is already a pinned dependency (our DICOM tests use it), its ImageRegistrationMethod gives
Mattes mutual information, multi-resolution pyramids and L-BFGS-B without any optimiser of ours, and its transforms
are ITK transforms, which 3D Slicer and ANTs read (.tfm text for linear, .h5 for composites with a B-spline).
docs/benchmarks.md ("registration") has the measurements behind the stage settings.

Transform convention (ITK's): the transform maps points of the FIXED image's world (LPS, mm) to points of the
MOVING image's world; resampling the moving image through it puts it on the fixed grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.image import Geometry, Image

MODES = ("rigid", "affine", "deformable")
BINS = 50  # Mattes mutual information histogram bins
SAMPLING = 0.1  # share of fixed voxels sampled per metric evaluation (random, seeded)


@dataclass(frozen=True)
class Settings:
    """Stage settings; the defaults are what docs/benchmarks.md measured."""

    shrink: tuple[int, ...] = (4, 2, 1)
    smooth_mm: tuple[float, ...] = (4.0, 2.0, 0.0)
    linear_iterations: int = 200
    bspline_spacing_mm: float = 40.0  # control point spacing at the finest level
    bspline_levels: tuple[int, ...] = (1,)  # mesh refinement factors (coarse mesh first)
    bspline_iterations: int = 20
    seed: int = 0


@dataclass
class Result:
    """The transform (fixed world -> moving world) and what each stage did."""

    transform: Any  # SimpleITK.CompositeTransform
    linear: Any  # the rigid/affine part alone (SimpleITK transform)
    mode: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def to_sitk(image: Image, dtype: str = "float") -> Any:
    """An Image as a SimpleITK image with the same geometry (ITK and medsight both index x-first, LPS)."""
    import SimpleITK as sitk

    arr = np.asarray(image.array)
    arr = arr.astype(np.float32) if dtype == "float" else arr.astype(np.int32 if arr.dtype != np.uint8 else np.uint8)
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose()))  # SimpleITK arrays are z, y, x
    out.SetSpacing([float(s) for s in image.geometry.spacing])
    out.SetOrigin([float(o) for o in image.geometry.origin])
    out.SetDirection([float(v) for v in image.geometry.direction_matrix.ravel()])
    return out


def from_sitk(img: Any) -> tuple[np.ndarray, Geometry]:
    """(array in medsight's x-first order, geometry) of a SimpleITK image."""
    import SimpleITK as sitk

    n = img.GetDimension()
    arr = sitk.GetArrayFromImage(img).transpose()
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(n, n)
    geom = Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(tuple(r) for r in direction))
    return np.ascontiguousarray(arr), geom


def _method(settings: Settings, shrink: tuple[int, ...], smooth: tuple[float, ...]) -> Any:
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(SAMPLING, settings.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(smooth))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def _linear_stage(fixed: Any, moving: Any, transform: Any, settings: Settings) -> tuple[Any, float]:
    reg = _method(settings, settings.shrink, settings.smooth_mm)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4,
                                                 numberOfIterations=settings.linear_iterations,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed, moving)
    return transform, float(reg.GetMetricValue())


def register(fixed: Image, moving: Image, mode: str = "deformable", settings: Settings | None = None) -> Result:
    """Register ``moving`` onto ``fixed``: moments-centred rigid, then affine, then a B-spline (per ``mode``)."""
    import SimpleITK as sitk

    settings = settings or Settings()
    start = time.perf_counter()
    f, m = to_sitk(fixed), to_sitk(moving)
    stages: list[dict[str, Any]] = []
    rigid = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    t0 = time.perf_counter()
    rigid, value = _linear_stage(f, m, sitk.Euler3DTransform(rigid), settings)
    stages.append({"stage": "rigid", "metric": value, "seconds": round(time.perf_counter() - t0, 2)})
    linear: Any = rigid
    if mode in ("affine", "deformable"):
        affine = sitk.AffineTransform(3)
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        affine.SetCenter(rigid.GetCenter())
        t0 = time.perf_counter()
        linear, value = _linear_stage(f, m, affine, settings)
        stages.append({"stage": "affine", "metric": value, "seconds": round(time.perf_counter() - t0, 2)})
    composite = sitk.CompositeTransform(linear)
    if mode == "deformable":
        t0 = time.perf_counter()
        bspline, value = _bspline_stage(f, m, linear, settings)
        composite.AddTransform(bspline)  # applied first: fixed point -> B-spline -> linear -> moving point
        stages.append({"stage": "bspline", "metric": value, "seconds": round(time.perf_counter() - t0, 2),
                       "control_spacing_mm": settings.bspline_spacing_mm})
    return Result(composite, linear, mode, stages, round(time.perf_counter() - start, 2))


def _bspline_stage(f: Any, m: Any, linear: Any, settings: Settings) -> tuple[Any, float]:
    import SimpleITK as sitk

    extent = np.asarray(f.GetSize()) * np.asarray(f.GetSpacing())
    finest = max(settings.bspline_levels)
    mesh = [max(1, int(round(e / settings.bspline_spacing_mm / finest))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(f, mesh, order=3)
    levels = len(settings.bspline_levels)
    reg = _method(settings, settings.shrink[-levels:], settings.smooth_mm[-levels:])
    reg.SetMovingInitialTransform(linear)
    reg.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=list(settings.bspline_levels))
    if len(settings.bspline_levels) == 1:  # one mesh: L-BFGS-B (ITK's v4 L-BFGS-B cannot follow a refined mesh)
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=settings.bspline_iterations,
                                 maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=1000,
                                 costFunctionConvergenceFactor=1e7)
    else:
        reg.SetOptimizerAsGradientDescentLineSearch(learningRate=5.0, numberOfIterations=settings.bspline_iterations,
                                                    convergenceMinimumValue=1e-4, convergenceWindowSize=5)
    reg.Execute(f, m)
    return bspline, float(reg.GetMetricValue())


def metric_value(fixed: Image, moving: Image, transform: Any, settings: Settings | None = None) -> float:
    """Mattes mutual information (negative: lower is better) of ``moving`` through ``transform`` on fixed's grid,
    evaluated on every voxel at full resolution (the same yardstick before and after)."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=BINS)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(transform)
    return float(reg.MetricEvaluate(to_sitk(fixed), to_sitk(moving)))


def resample(image: Image, reference: Geometry, shape: tuple[int, ...], transform: Any, labels: bool = False) -> Image:
    """``image`` resampled through ``transform`` onto the reference grid (nearest neighbour for labels, else linear;
    outside the moving image: 0)."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in reference.spacing])
    ref.SetOrigin([float(o) for o in reference.origin])
    ref.SetDirection([float(v) for v in reference.direction_matrix.ravel()])
    src = to_sitk(image, dtype="label" if labels else "float")
    out = sitk.Resample(src, ref, transform, sitk.sitkNearestNeighbor if labels else sitk.sitkLinear, 0.0,
                        src.GetPixelID())
    arr, geom = from_sitk(out)
    if labels:
        arr = arr.astype(np.asarray(image.array).dtype, copy=False)
    return Image(arr, geom, image.provenance.with_step("registered_resample", labels=labels))


def jacobian(transform: Any, reference: Geometry, shape: tuple[int, ...]) -> np.ndarray:
    """Determinant of the transform's spatial Jacobian at every voxel of the reference grid (x-first order).

    From the displacement field u with central differences (one-sided at the border), in world mm:
    du_i/dx_j = sum_a (du_i/d index_a) / spacing_a * direction[j, a], then det(I + du/dx). Written out here because
    ITK's DisplacementFieldJacobianDeterminant filter (SimpleITK 2.5) differentiates along index axes without the
    direction (an affine with det 1.189 read 0.974 on an axis-permuted grid) and is off at the border voxels."""
    import SimpleITK as sitk

    field_img = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, [int(s) for s in shape],
                                                  [float(o) for o in reference.origin],
                                                  [float(s) for s in reference.spacing],
                                                  [float(v) for v in reference.direction_matrix.ravel()])
    u = sitk.GetArrayFromImage(field_img).astype(np.float32).transpose(2, 1, 0, 3)  # x, y, z, component
    d = reference.direction_matrix
    grads = [np.gradient(u[..., i], *reference.spacing) for i in range(3)]  # grads[i][a] = du_i/d(mm along axis a)
    j = [[sum(grads[i][a] * float(d[jj, a]) for a in range(3)) + (1.0 if i == jj else 0.0) for jj in range(3)]
         for i in range(3)]
    return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1]) - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))
