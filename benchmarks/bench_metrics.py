"""Claim: medsight's Dice + HD95 + ASSD + NSD equal MONAI's (to ~1e-6 relative) and run >= 20x faster.

Mask pairs of four families (benchmarks/masks.py: organ-like, bumpy surfaces, scattered islands, internal holes)
at two image sizes, 256 x 256 x 160 (spacing 0.8 x 0.8 x 2.5 mm) and 512 x 512 x 300 (0.75 x 0.75 x 1.0 mm). Both
libraries get the same masks in the same run, interleaved pair by pair; each run times all pairs of a size, and
the median over runs is reported, as wall time and as CPU time of the process (all threads; steadier than wall
time on a loaded machine). Peak memory of the medsight computation is measured with tracemalloc (NumPy's buffers
are traced) and as the peak RSS of a separate process that generates the masks and runs only medsight.

    nice -n 10 .venv/bin/python benchmarks/bench_metrics.py --runs 3
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from masks import FAMILIES, full_pair, make_pair  # noqa: E402

TOL_MM = 1.0
# (shape, spacing in mm, pairs per family)
SIZES = {
    "256x256x160": ((256, 256, 160), (0.8, 0.8, 2.5), 2),
    "512x512x300": ((512, 512, 300), (0.75, 0.75, 1.0), 1),
}


def medsight_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    from medsight.metrics.segmentation import mask_metrics

    m = mask_metrics(pred, ref, spacing, TOL_MM)
    return {k: m[k] for k in ("dice", "hd95", "assd", "nsd")}


def monai_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    import torch
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_surface_dice)

    p = torch.from_numpy(pred[None, None]).float()
    r = torch.from_numpy(ref[None, None]).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(compute_dice(p, r)),
            "hd95": float(compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)),
            "assd": float(compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)),
            "nsd": float(compute_surface_dice(p, r, [TOL_MM], spacing=spacing)),
        }


def memory_probe(size: str) -> None:
    """Run medsight alone on every pair of one size and print this process's peak RSS in MiB (a subprocess)."""
    for pair in _pairs(size):
        pred, ref = full_pair(pair)
        medsight_metrics(pred, ref, SIZES[size][1])
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it is not inherited from the parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_rss_mib(size: str) -> float:
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--memory-probe", size], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _pairs(size: str) -> list:
    shape, spacing, per_family = SIZES[size]
    return [make_pair(f, 1000 + i, shape, spacing) for f in FAMILIES for i in range(per_family)]


def bench_size(size: str, runs: int, skip_monai: bool) -> dict:
    """Interleaved medsight/MONAI timings of every pair of one size, the worst value differences, memory."""
    shape, spacing, _ = SIZES[size]
    pairs = _pairs(size)
    fams = [f for f in FAMILIES for _ in range(SIZES[size][2])]
    wall = {"medsight": [], "monai": []}
    cpu = {"medsight": [], "monai": []}
    fam_cpu: dict[str, dict[str, float]] = {f: {"medsight": 0.0, "monai": 0.0} for f in FAMILIES}
    worst = {k: 0.0 for k in ("dice", "hd95", "assd", "nsd")}
    for run in range(runs):
        tot = {k: [0.0, 0.0] for k in wall}
        for fam, pair in zip(fams, pairs):
            pred, ref = full_pair(pair)
            got = {}
            for name, fn in (("medsight", medsight_metrics), ("monai", monai_metrics)):
                if name == "monai" and skip_monai:
                    continue
                t, c = time.perf_counter(), time.process_time()
                got[name] = fn(pred, ref, spacing)
                dt, dc = time.perf_counter() - t, time.process_time() - c
                tot[name][0] += dt
                tot[name][1] += dc
                if run == 0:
                    fam_cpu[fam][name] += dc
            if "monai" in got:
                for k in worst:
                    worst[k] = max(worst[k], abs(got["medsight"][k] - got["monai"][k]) / max(abs(got["monai"][k]),
                                                                                         1e-12))
            del pred, ref
        for name in wall:
            wall[name].append(tot[name][0])
            cpu[name].append(tot[name][1])
        print(f"{size} run {run + 1}: medsight {tot['medsight'][0]:.2f} s wall / {tot['medsight'][1]:.2f} s CPU, "
              f"MONAI {tot['monai'][0]:.2f} s / {tot['monai'][1]:.2f} s", flush=True)
    pred, ref = full_pair(pairs[0])
    tracemalloc.start()
    medsight_metrics(pred, ref, spacing)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"wall": wall, "cpu": cpu, "fam_cpu": fam_cpu, "worst": worst, "n_pairs": len(pairs),
            "traced_mib": traced, "alone_mib": probe_rss_mib(size), "spacing": spacing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--skip-monai", action="store_true", help="time medsight only (for profiling)")
    ap.add_argument("--memory-probe", metavar="SIZE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return

    import monai  # (import cost kept out of the timings)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {size: bench_size(size, args.runs, args.skip_monai) for size in args.sizes}
    for size, res in results.items():
        mw, mc = (statistics.median(res[k]["medsight"]) for k in ("wall", "cpu"))
        ow, oc = (statistics.median(res[k]["monai"]) for k in ("wall", "cpu"))
        print(f"{size}: medsight {mw:.2f} s wall / {mc:.2f} s CPU; MONAI {ow:.2f} / {oc:.2f}; ratio wall "
              f"{ow / mw:.1f}x, CPU {oc / mc:.1f}x; worst rel diff {res['worst']}")
    if args.skip_monai or args.no_record:
        return
    from _record import machine_line, record_section

    print(record_section("metrics", _markdown(results, args, monai.__version__, machine_line(), peak_rss_mib())))


def _markdown(results: dict, args: argparse.Namespace, monai_version: str, machine: str, rss_mib: float) -> str:
    lines = [
        f"## Segmentation metrics: medsight vs MONAI {monai_version}",
        "",
        machine + " Timings were taken on a shared machine loaded by other engineers' jobs (2 cores for ~8 "
        "people), so wall times are noisy; CPU time (all threads of the process) is the steadier figure.",
        "",
        f"Command: `nice -n 10 .venv/bin/python benchmarks/bench_metrics.py --runs {args.runs}`",
        "",
        "Dice + HD95 + ASSD + NSD (tolerance 1.0 mm) per pair, four mask families (benchmarks/masks.py: organ-like, "
        "bumpy surfaces, scattered islands, internal holes), both libraries on the same masks in the same run, "
        f"interleaved pair by pair; time for all pairs of a size, median of n={args.runs} runs.",
        "",
        "| image size (spacing mm) | pairs | medsight wall / CPU (s) | MONAI wall / CPU (s) | ratio wall | "
        "ratio CPU |",
        "|---|---|---|---|---|---|",
    ]
    for size, res in results.items():
        mw, mc = (statistics.median(res[k]["medsight"]) for k in ("wall", "cpu"))
        ow, oc = (statistics.median(res[k]["monai"]) for k in ("wall", "cpu"))
        lines.append(f"| {size} ({' x '.join(f'{v:g}' for v in res['spacing'])}) | {res['n_pairs']} | "
                     f"{mw:.2f} / {mc:.2f} | {ow:.2f} / {oc:.2f} | **{ow / mw:.1f}x** | **{oc / mc:.1f}x** |")
    lines += ["", "Per family, CPU time of the first run (medsight / MONAI, s, ratio):", ""]
    for size, res in results.items():
        lines.append(f"- {size}: " + "; ".join(
            f"{f} {v['medsight']:.2f} / {v['monai']:.2f} ({v['monai'] / v['medsight']:.0f}x)"
            for f, v in res["fam_cpu"].items()))
    lines += ["", "Runs (medsight / MONAI, wall s): " + "; ".join(
        f"{size}: " + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(res["wall"]["medsight"], res["wall"]["monai"]))
        for size, res in results.items()) + "."]
    w = {k: max(res["worst"][k] for res in results.values()) for k in ("dice", "hd95", "assd", "nsd")}
    lines += ["", f"Largest relative difference from MONAI over all pairs: Dice {w['dice']:.1e}, HD95 "
              f"{w['hd95']:.1e}, ASSD {w['assd']:.1e}, NSD {w['nsd']:.1e} (MONAI returns float32; see "
              "docs/metrics.md)."]
    mem = "; ".join(f"{size}: {res['alone_mib']:.0f} MiB peak RSS for a process generating the masks and running "
                    f"only medsight, {res['traced_mib']:.0f} MiB of NumPy buffers traced during one pair"
                    for size, res in results.items())
    lines += [f"Memory: {mem}. The benchmark process itself (torch + MONAI loaded) peaked at {rss_mib:.0f} MiB "
              "RSS."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
