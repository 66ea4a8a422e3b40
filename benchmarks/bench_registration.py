"""Registration and follow-up benchmark -> docs/benchmarks.md section "registration".

Known deformations (the truth is the transform we applied, synthetic.deform):
- MNI ICBM152 2009a T1 (nilearn wheel) at 3 mm with GM/WM labels (argmax of the probability maps);
- the real head CT of Debian's invesalius-examples (Cranium.inv3, raw int16 HU) at 3 mm, labels by threshold
  (soft tissue -200..300 HU, bone > 300 HU: thresholds, not expert labels), when the package is installed.
Kinds: rigid (12 deg + 14 mm), affine (+ scaling up to 8 %), deformable (+ smooth B-spline warp, N(0, 3 mm) per
control point). Per pair: mean target registration error at 50 landmarks (mm), mean label Dice before/after,
folding % (Jacobian <= 0 over the fixed foreground), seconds. Peers (their defaults) when importable: ITK-elastix
(default rigid+affine+bspline parameter maps) and ANTsPy (SyN) - run this script with an interpreter that has them.

Follow-up: simulated pairs (synthetic.followup: 5 lesions, grown x2.5, shrunk x0.25, stable, resolved, new) under
different seeds of noise and motion: share of lesions classified correctly and the volume-change error against
the analytic volumes, unit = lesion.

    PYTHONPATH=src python benchmarks/bench_registration.py [--quick] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cranium import read_cranium  # noqa: E402
from _record import machine_line, record_section  # noqa: E402

from medsight.image import Geometry, Image  # noqa: E402
from medsight.registration import engine  # noqa: E402
from medsight.registration.register import align  # noqa: E402
from medsight.synthetic.deform import Pair, deformed_pair, mni_pair, target_errors  # noqa: E402

KINDS = {"rigid": dict(warp_mm=0.0, scale=0.0), "affine": dict(warp_mm=0.0, scale=0.08),
         "deformable": dict(warp_mm=3.0, scale=0.0)}


def cranium(spacing_mm: float = 3.0) -> tuple[Image, np.ndarray] | None:
    """The invesalius head CT resampled to ``spacing_mm`` and its threshold labels, or None when not installed."""
    raw = read_cranium()
    if raw is None:
        return None
    vol, sp = raw
    zoom = sp / spacing_mm
    small = ndimage.zoom(ndimage.gaussian_filter(vol, 0.4 / zoom), zoom, order=1)
    labels = np.where(small > 300, 2, np.where(small > -200, 1, 0)).astype(np.uint8)
    return Image(small, Geometry((spacing_mm,) * 3, (0.0, 0.0, 0.0), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)))), labels


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice (medsight.metrics.segmentation.dice) over the non-zero labels of ``a``."""
    from medsight.metrics.segmentation import dice

    return float(np.mean([dice(a == v, b == v) for v in np.unique(a) if v]))


def medsight_run(pair: Pair, mode: str) -> dict[str, float]:
    reg = align(pair.fixed, pair.moving, mode, pair.moving_labels, pair.fixed_labels)
    return {"tre": float(target_errors(pair, reg.result.transform).mean()),
            "dice_before": reg.quality["label_dice"]["mean_before"], "dice_after": reg.quality["label_dice"]["mean_after"],
            "folding": reg.quality["jacobian"]["folding_percent"], "seconds": reg.quality["seconds"]}


def elastix_run(pair: Pair) -> dict[str, float] | None:
    try:
        import itk
    except ImportError:
        return None
    f = itk.image_from_array(np.ascontiguousarray(pair.fixed.array.T.astype(np.float32)))
    m = itk.image_from_array(np.ascontiguousarray(pair.moving.array.T.astype(np.float32)))
    for img, src in ((f, pair.fixed), (m, pair.moving)):
        img.SetSpacing(list(src.spacing))
        img.SetOrigin(list(src.geometry.origin))
        img.SetDirection(itk.matrix_from_array(src.geometry.direction_matrix.copy()))
    params = itk.ParameterObject.New()
    for name in ("rigid", "affine", "bspline"):
        params.AddParameterMap(params.GetDefaultParameterMap(name))
    t0 = time.perf_counter()
    _, result = itk.elastix_registration_method(f, m, parameter_object=params, log_to_console=False)
    seconds = time.perf_counter() - t0
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:  # transformix writes deformationField.nii into the working folder
        os.chdir(tmp)
        try:
            field = itk.array_from_image(itk.transformix_deformation_field(m, result))
        finally:
            os.chdir(here)
    field = field.transpose(2, 1, 0, 3)  # x, y, z, component
    tre = []
    for y in pair.landmarks:
        x = np.asarray(pair.truth.TransformPoint([float(v) for v in y]))
        idx = pair.fixed.geometry.world_to_index(x)
        u = [ndimage.map_coordinates(field[..., c], idx[:, None], order=1)[0] for c in range(3)]
        tre.append(np.linalg.norm(x + np.asarray(u) - y))
    result.SetParameter("FinalBSplineInterpolationOrder", "0")
    lab = itk.image_from_array(np.ascontiguousarray(pair.moving_labels.array.T.astype(np.float32)))
    lab.CopyInformation(m)
    moved = np.rint(itk.array_from_image(itk.transformix_filter(lab, result)).T).astype(np.uint8)
    return {"tre": float(np.mean(tre)), "dice_after": _dice(pair.fixed_labels.array, moved), "seconds": seconds}


def ants_run(pair: Pair) -> dict[str, float] | None:
    try:
        import ants
        import pandas as pd
    except ImportError:
        return None
    mk = lambda a, src: ants.from_numpy(np.asarray(a, np.float32), origin=list(src.geometry.origin),  # noqa: E731
                                        spacing=list(src.spacing), direction=src.geometry.direction_matrix.copy())
    f, m = mk(pair.fixed.array, pair.fixed), mk(pair.moving.array, pair.moving)
    t0 = time.perf_counter()
    out = ants.registration(f, m, type_of_transform="SyN")
    seconds = time.perf_counter() - t0
    xs = np.asarray([pair.truth.TransformPoint([float(v) for v in y]) for y in pair.landmarks])
    pts = ants.apply_transforms_to_points(3, pd.DataFrame(xs, columns=["x", "y", "z"]), out["fwdtransforms"])
    tre = np.linalg.norm(pts[["x", "y", "z"]].to_numpy() - pair.landmarks, axis=1)
    moved = ants.apply_transforms(f, mk(pair.moving_labels.array, pair.moving), out["fwdtransforms"],
                                  interpolator="nearestNeighbor").numpy().astype(np.uint8)
    return {"tre": float(tre.mean()), "dice_after": _dice(pair.fixed_labels.array, moved), "seconds": seconds}


def registration_rows(name: str, make, seeds: list[int], peers: bool = True) -> list[str]:  # noqa: ANN001
    rows = []
    for kind, params in KINDS.items():
        runs: dict[str, list[dict[str, float]]] = {}
        for seed in seeds:
            pair = make(seed=seed, **params)
            runs.setdefault(f"medsight {kind}", []).append(medsight_run(pair, kind))
            if kind == "deformable" and peers:
                for peer, fn in (("elastix defaults (rigid+affine+B-spline)", elastix_run), ("ANTsPy SyN", ants_run)):
                    r = fn(pair)
                    if r is not None:
                        runs.setdefault(peer, []).append(r)
            print(name, kind, seed, {k: v[-1] for k, v in runs.items()}, flush=True)
        for method, rs in runs.items():
            g = lambda k: np.mean([r[k] for r in rs if r.get(k) is not None]) if any(k in r for r in rs) else None  # noqa: E731
            cell = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            rows.append(f"| {name} | {kind} | {method} | {len(rs)} | {cell(g('tre'), '.2f')} | "
                        f"{cell(g('dice_before') if 'medsight' in method else None, '.3f')} | {cell(g('dice_after'), '.3f')} | "
                        f"{cell(g('folding'), '.3f')} | {cell(g('seconds'), '.1f')} |")
    return rows


def followup_rows(seeds: list[int]) -> tuple[list[str], int, int, list[float]]:
    from medsight.registration.followup_run import follow_up
    from medsight.synthetic.followup import followup_pair

    correct = total = 0
    errors: list[float] = []
    seconds = []
    for seed in seeds:
        rot, shift = 3.0 + 2 * seed, (4.0 + seed, -3.0, 2.0 * seed)
        pair = followup_pair(spacing_mm=2.0, rotation_deg=rot, shift_mm=shift, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            fu = follow_up(pair.prior, pair.prior_labels.array > 0, pair.current, pair.current_labels.array > 0,
                           Path(tmp) / "out")
            seconds.append(time.perf_counter() - t0)
        for lesion in pair.lesions:
            when = "prior" if lesion.in_prior else "current"
            want = pair.where(lesion, when)
            track = min(fu.tracks, key=lambda t: np.linalg.norm(np.asarray((getattr(t, when) or {"centroid": (1e9,) * 3})
                                                                           ["centroid"]) - want))
            total += 1
            correct += track.status == lesion.expected
            v0, v1 = lesion.volume_ml("prior"), lesion.volume_ml("current")
            m0, m1 = (track.prior or {}).get("volume_ml", 0.0), (track.current or {}).get("volume_ml", 0.0)
            errors.append(100 * abs((m1 - m0) - (v1 - v0)) / max(v0, v1))
        print("follow-up seed", seed, correct, total, flush=True)
    row = (f"| simulated follow-up pairs, 2 mm | {len(seeds)} pairs, {total} lesions | {correct}/{total} | "
           f"{np.mean(errors):.1f} | {np.max(errors):.1f} | {np.mean(seconds):.1f} |")
    return [row], correct, total, errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed per case")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    seeds = [0] if args.quick else [0, 1]
    load = os.getloadavg()
    rows = registration_rows("MNI T1, 3 mm", lambda seed, **kw: mni_pair(3.0, seed=seed, **kw), seeds)
    ct = cranium()
    if ct is not None:
        rows += registration_rows("head CT (invesalius), 3 mm",  # one seed, no peers: the 2-core time budget
                                  lambda seed, **kw: deformed_pair(ct[0], ct[1], seed=seed, **kw), seeds[:1], False)
    fu_rows, correct, total, errors = followup_rows(seeds)
    load_end = os.getloadavg()
    peers = [p for p, mod in (("ITK-elastix", "itk"), ("ANTsPy", "ants")) if _importable(mod)]
    md = f"""## Registration (benchmarks/bench_registration.py)

{machine_line()} Machine load (1-min load average) {load[0]:.1f} at the start, {load_end[0]:.1f} at the end, from
parallel work on the same 2 cores: seconds are inflated accordingly; peers ran in the same process on the same
pairs under the same load. Peers installed: {", ".join(peers) or "none (ITK-elastix / ANTsPy did not install here)"}.

Known deformations of the real MNI T1 template and of the real invesalius head CT (12 deg rotation about a random
axis, 14 mm shift; affine adds up to 8 % scaling; deformable adds a smooth B-spline warp, N(0, 3 mm) per control
point). n = pairs (seeds); TRE = mean target registration error at 50 landmarks per pair (mm); Dice = mean over
labels (GM/WM for MNI; threshold soft tissue/bone for the CT) of the moving labels before/after, unit = pair;
folding = % of fixed-foreground voxels with Jacobian determinant <= 0. Peers ran on the MNI deformable pairs only
(the CT rows are medsight alone, one seed, to fit the time budget of a loaded 2-core machine). Peer rows give TRE,
Dice after and seconds (their folding is not measured here); ITK and ANTs use both cores, as SimpleITK does.

| volume | deformation | method | n | TRE mm | Dice before | Dice after | folding % | seconds |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Follow-up on simulated growth pairs (synthetic.followup: per pair 5 lesions 12-20 mm across: grown x2.5 in volume,
shrunk x0.25, stable, resolved, new; motion between scans 3-7 deg and 4-7 mm; lesions given as label maps, affine
registration). Volume-change error = |measured change - analytic change| / larger analytic volume, unit = lesion.

| case | n | correctly classified | mean volume-change error % | max % | seconds per pair |
|---|---|---|---|---|---|
""" + "\n".join(fu_rows) + "\n"
    print(md)
    if not args.no_record:
        record_section("registration", md)


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


if __name__ == "__main__":
    main()
