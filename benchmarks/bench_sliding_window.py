"""Claim: sliding-window inference overhead (everything but the network's forward passes) is < 15% of inference
time on a 160^3 volume.

Two figures, median of ``--repeats`` runs on a 160^3 T1-like volume at 1 mm with a 3D DynUNet built by our planner
(untrained weights: speed does not depend on them):
- window: ``sliding_window`` alone (patching, Gaussian weighting, stitching) vs the seconds inside the network;
- full predict: ``Predictor.predict`` (normalisation, resampling to the plan grid and back, mirroring, argmax) vs
  the seconds inside the network.
Run: ``.venv/bin/python benchmarks/bench_sliding_window.py`` (one torch thread, as the demo uses on a busy box).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, median, record_section  # noqa: E402

from medsight.image import Geometry, Image  # noqa: E402
from medsight.segmentation.predict import Predictor  # noqa: E402
from medsight.segmentation.sliding import sliding_window, timed_predictor  # noqa: E402
from medsight.nets.segmentation import build_model, forward_logits  # noqa: E402
from medsight.plan.planner import make_plan  # noqa: E402
from medsight.engine.checkpoint import save_checkpoint  # noqa: E402


def _fingerprint(size: int) -> dict:
    return {"dataset": "bench", "spacings": [[1.0, 1.0, 1.0]] * 3, "shapes": [[size] * 3] * 3,
            "channels": {"0": "T1"}, "labels": {"background": 0, "gm": 1, "wm": 2, "lesion": 3},
            "intensity": {"0": {"name": "T1", "mean": 0.0, "std": 1.0, "p00_5": 0.0, "median": 0.0, "p99_5": 1.0}}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-gb", type=float, default=0.5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    plan = make_plan(_fingerprint(args.size), memory_gb=args.memory_gb, base_filters=8)
    cfg = plan.config("3d")
    torch.manual_seed(0)
    net = build_model(cfg, 1, 4).eval()
    x = torch.randn(1, 1, args.size, args.size, args.size)

    window = []
    for _ in range(args.repeats):
        fn = timed_predictor(lambda p: forward_logits(net, p))
        t = time.perf_counter()
        sliding_window(x, fn, cfg.patch_size, overlap=0.5)
        total = time.perf_counter() - t
        window.append((total, fn.seconds, fn.calls))

    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp)
        plan.save(md / "plan.json")
        save_checkpoint(md / "fold_0/model_final.pt", {"model": net.state_dict(), "config": "3d", "fold": 0})
        predictor = Predictor(md, mirror_axes=[0], overlap=0.5)
        rng = np.random.default_rng(0)
        img = Image(rng.normal(100, 20, (args.size,) * 3).astype(np.float32), Geometry.identity(3))
        full = []
        for _ in range(args.repeats):
            pred = predictor.predict(img)
            full.append((pred.seconds, pred.network_seconds))

    w_over = median([(t - n) / t for t, n, _ in window])
    f_over = median([(t - n) / t for t, n in full])
    md_text = f"""## Sliding-window inference overhead ({args.size}^3 volume)

{machine_line()} torch threads: {args.threads}.
Command: `.venv/bin/python benchmarks/bench_sliding_window.py --size {args.size} --repeats {args.repeats} --threads {args.threads}`

Network: planner's 3D DynUNet (memory budget {args.memory_gb} GB, 8 base filters), patch {cfg.patch_size}, overlap 0.5,
Gaussian weighting (sigma = patch/8), {window[0][2]} windows. Overhead = 1 - (seconds inside the network) / (total).

| path | total s (median) | network s (median) | overhead (median of {args.repeats}) | target |
|---|---|---|---|---|
| sliding window only | {median([t for t, _, _ in window]):.2f} | {median([n for _, n, _ in window]):.2f} | {w_over:.1%} | < 15% |
| full predict (normalise, resample both ways, L-R mirroring, argmax) | {median([t for t, _ in full]):.2f} | {median([n for _, n in full]):.2f} | {f_over:.1%} | < 15% |
"""
    print(md_text)
    if not args.no_record:
        record_section("sliding_window", md_text)


if __name__ == "__main__":
    main()
