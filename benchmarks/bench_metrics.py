"""Claim: medsight's Dice + HD95 + ASSD + NSD equal MONAI's (to 1e-6 relative) and run >= 5x faster.

20 pairs of organ-like 3D masks (256 x 256 x 160 voxels, spacing 0.8 x 0.8 x 2.5 mm): a lobulated, smoothly
deformed ellipsoid as the reference and a prediction that is shifted, dilated or eroded and carries a few false
positive islands, as real model outputs do. Both libraries get the same masks in the same run; each run times
all 20 pairs, and the median over runs is reported. Peak memory of the medsight computation is measured with
tracemalloc (NumPy's buffers are traced) and, more conservatively, as the peak RSS of a separate process that
generates the masks and runs only medsight on all pairs (no torch or MONAI loaded).

    .venv/bin/python benchmarks/bench_metrics.py --runs 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPE = (256, 256, 160)
SPACING = (0.8, 0.8, 2.5)
TOL_MM = 1.0
N_PAIRS = 20


def _blob(rng: np.random.Generator, shape: tuple[int, ...], radii_vox: np.ndarray, roughness: float) -> np.ndarray:
    """A lobulated ellipsoid: smoothed noise modulates the radius so the surface bulges like an organ's."""
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij", sparse=True)
    r = np.sqrt(sum((g / rad) ** 2 for g, rad in zip(grids, radii_vox)))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(6, 6, 2.5))
    noise /= noise.std() + 1e-12
    return r < 1.0 + roughness * noise


def organ_pair(seed: int) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """(box, reference crop, prediction crop): both masks are zero outside ``box`` of the full volume."""
    rng = np.random.default_rng(seed)
    radii_mm = rng.uniform([35, 30, 45], [65, 55, 110])  # liver/spleen/kidney-sized
    radii = radii_mm / np.asarray(SPACING)
    crop = tuple(int(2 * r * 1.35) + 12 for r in radii)
    crop = tuple(min(c, n - 2) for c, n in zip(crop, SHAPE))
    ref = _blob(rng, crop, radii, 0.08)
    pred = np.roll(ref, tuple(int(v) for v in rng.integers(-3, 4, size=3) * np.array([1, 1, 0])), axis=(0, 1, 2))
    step = rng.integers(-2, 3)
    if step > 0:
        pred = ndimage.binary_dilation(pred, iterations=int(step))
    elif step < 0:
        pred = ndimage.binary_erosion(pred, iterations=int(-step))
    pred &= _blob(rng, crop, radii * 1.05, 0.12)  # a differently wobbly border
    for _ in range(rng.integers(0, 4)):  # false-positive islands
        c = [rng.integers(3, n - 3) for n in crop]
        pred[c[0] - 2:c[0] + 3, c[1] - 2:c[1] + 3, c[2] - 1:c[2] + 2] = True
    start = [int(rng.integers(1, n - c)) for n, c in zip(SHAPE, crop)]
    box = tuple(slice(s, s + c) for s, c in zip(start, crop))
    return box, ref, pred


def full(box: tuple[slice, ...], crop: np.ndarray) -> np.ndarray:
    out = np.zeros(SHAPE, dtype=bool)
    out[box] = crop
    return out


def medsight_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from medsight.metrics.segmentation import mask_metrics

    m = mask_metrics(pred, ref, SPACING, TOL_MM)
    return {k: m[k] for k in ("dice", "hd95", "assd", "nsd")}


def monai_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    import torch
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_surface_dice)

    p = torch.from_numpy(pred[None, None]).float()
    r = torch.from_numpy(ref[None, None]).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(compute_dice(p, r)),
            "hd95": float(compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING)),
            "assd": float(compute_average_surface_distance(p, r, symmetric=True, spacing=SPACING)),
            "nsd": float(compute_surface_dice(p, r, [TOL_MM], spacing=SPACING)),
        }


def memory_probe(n_pairs: int) -> None:
    """Run medsight alone on every pair and print this process's peak RSS in MiB (called in a subprocess)."""
    for i in range(n_pairs):
        box, ref_c, pred_c = organ_pair(1000 + i)
        medsight_metrics(full(box, pred_c), full(box, ref_c))
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it is not inherited from the parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_rss_mib(n_pairs: int) -> float:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--memory-probe", "--pairs", str(n_pairs)], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=N_PAIRS)
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--skip-monai", action="store_true", help="time medsight only (for profiling)")
    ap.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        memory_probe(args.pairs)
        return

    import monai  # noqa: F401  (import cost kept out of the timings)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pairs = [organ_pair(1000 + i) for i in range(args.pairs)]
    t_ms, t_mo = [], []
    worst_rel = {k: 0.0 for k in ("dice", "hd95", "assd", "nsd")}
    ours_vals, theirs_vals = [], []
    for run in range(args.runs):
        a = b = 0.0
        for i, (box, ref_c, pred_c) in enumerate(pairs):
            ref, pred = full(box, ref_c), full(box, pred_c)
            t = time.perf_counter()
            ours = medsight_metrics(pred, ref)
            a += time.perf_counter() - t
            if not args.skip_monai:
                t = time.perf_counter()
                theirs = monai_metrics(pred, ref)
                b += time.perf_counter() - t
                for k in worst_rel:
                    worst_rel[k] = max(worst_rel[k], abs(ours[k] - theirs[k]) / max(abs(theirs[k]), 1e-12))
                if run == 0:
                    ours_vals.append(ours)
                    theirs_vals.append(theirs)
        t_ms.append(a)
        t_mo.append(b)
        print(f"run {run + 1}: medsight {a:.2f} s, MONAI {b:.2f} s", flush=True)

    box, ref_c, pred_c = pairs[0]
    ref, pred = full(box, ref_c), full(box, pred_c)
    tracemalloc.start()
    medsight_metrics(pred, ref)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss_mib = peak_rss_mib()
    alone_mib = probe_rss_mib(args.pairs)

    med_ms, med_mo = statistics.median(t_ms), statistics.median(t_mo)
    print(f"medsight median {med_ms:.2f} s for {args.pairs} pairs; MONAI median {med_mo:.2f} s; "
          f"ratio {med_mo / med_ms if med_ms else float('nan'):.1f}x")
    print("worst relative difference vs MONAI:", {k: f"{v:.1e}" for k, v in worst_rel.items()})
    print(f"medsight peak traced memory {peak_mib:.0f} MiB (one pair); medsight-only process peak RSS "
          f"{alone_mib:.0f} MiB; this process (torch + MONAI) {rss_mib:.0f} MiB")
    if args.skip_monai or args.no_record:
        return
    vox = [int(np.count_nonzero(r)) for _, r, _ in pairs]
    from _record import machine_line, record_section

    md = f"""## Segmentation metrics: medsight vs MONAI {monai.__version__}

{machine_line()}

Command: `.venv/bin/python benchmarks/bench_metrics.py --runs {args.runs}`

{args.pairs} pairs of organ-like masks, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} voxels, spacing {SPACING} mm (reference
{min(vox) * np.prod(SPACING) / 1000:.0f}-{max(vox) * np.prod(SPACING) / 1000:.0f} ml); Dice + HD95 + ASSD + NSD
(tolerance {TOL_MM} mm) per pair; wall time for all pairs, median of {args.runs} runs (same process, same masks).

| | medsight | MONAI | ratio |
|---|---|---|---|
| time for {args.pairs} pairs (median) | {med_ms:.2f} s | {med_mo:.2f} s | **{med_mo / med_ms:.1f}x faster** |
| per pair | {med_ms / args.pairs * 1000:.0f} ms | {med_mo / args.pairs * 1000:.0f} ms | |

Runs (medsight / MONAI, s): {", ".join(f"{x:.2f} / {y:.2f}" for x, y in zip(t_ms, t_mo))}.
Largest relative difference from MONAI over all pairs: Dice {worst_rel["dice"]:.1e}, HD95 {worst_rel["hd95"]:.1e},
ASSD {worst_rel["assd"]:.1e}, NSD {worst_rel["nsd"]:.1e} (MONAI returns float32; see docs/metrics.md).
Memory (limit 2 GiB): a process that generates the masks and runs only medsight on all {args.pairs} pairs peaks
at {alone_mib:.0f} MiB RSS (Python, NumPy, SciPy and the masks included); NumPy buffers traced during one pair's
metrics: {peak_mib:.0f} MiB. The benchmark process itself (torch + MONAI loaded) peaked at {rss_mib:.0f} MiB RSS.
"""
    print(record_section("metrics", md))


if __name__ == "__main__":
    main()
