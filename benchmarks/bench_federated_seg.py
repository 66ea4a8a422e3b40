"""Federated segmentation on the demo's brain sites: FedAvg over site_A + site_B against pooled (centralised)
A + B and each single site, all scored on the unseen site_C.

Every arm trains the demo's 3D plan (the planner at 0.5 GB, 8 base filters: what ``medsight demo`` trains) with
the federated sites' own engine task (federated/seg_site.py), in process: the Flower transport adds time per round
(measured by the classification benchmark, section "federated"), not different weights. Budget in optimiser
steps (batches of the plan's patches): FedAvg ``rounds`` x ``steps`` per site (the sites' AdamW state restarts
each round, as in the ClientApp), pooled 2 x rounds x steps on the union of both sites' training cases (one
continuous AdamW run), each single site rounds x steps. Scoring: every site_C case predicted on the plan's grid
without mirroring, hard Dice per class per case (lesion only on cases that hold one), mean with a 95 % bootstrap
CI over patients (1,000 resamples).

    OMP_NUM_THREADS=2 python benchmarks/bench_federated_seg.py --rounds 10 --steps 30 --record
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402

from medsight.data.dataset import load_dataset  # noqa: E402
from medsight.data.fingerprint import compute_fingerprint  # noqa: E402
from medsight.data.preprocess import preprocess_case  # noqa: E402
from medsight.engine.loop import local_update  # noqa: E402
from medsight.engine.seeding import seed_everything  # noqa: E402
from medsight.federated.aggregate import fedavg  # noqa: E402
from medsight.federated.seg_site import SegSiteTask, segmentation_model  # noqa: E402
from medsight.metrics.bootstrap import cluster_samples  # noqa: E402
from medsight.plan.planner import make_plan  # noqa: E402
from medsight.segmentation.predict import plan_grid_probabilities  # noqa: E402
from medsight.segmentation.train import SegTask  # noqa: E402
from medsight.synthetic.demo import TRAINING_SITES, UNSEEN_SITE, build_demo_dataset  # noqa: E402

CONFIG = "3d"


def per_case_dice(weights: dict, plan, ds, cases: list[str]) -> dict[str, list[tuple[str, float]]]:
    """label name -> [(patient, Dice)] over ``cases`` (a class absent from a case's reference is skipped)."""
    cfg = plan.config(CONFIG)
    net = segmentation_model(plan, CONFIG)
    net.load_state_dict(weights)
    net.eval()
    names = {v: k for k, v in plan.labels.items() if v}
    out: dict[str, list[tuple[str, float]]] = {n: [] for n in names.values()}
    for cid in cases:
        case = ds.case(cid)
        pre = preprocess_case(case, plan, cfg)
        pred = plan_grid_probabilities([net], pre.image, cfg, [])[0].numpy().argmax(0)
        for k, n in names.items():
            ref = pre.label == k
            if ref.any():
                a = pred == k
                out[n].append((case.patient_id, 2.0 * float((a & ref).sum()) / float(a.sum() + ref.sum())))
    return out


def summarise(scores: dict[str, list[tuple[str, float]]], n_boot: int = 1000) -> dict[str, dict[str, float]]:
    res = {}
    for name, rows in scores.items():
        if not rows:
            continue
        patients = np.array([p for p, _ in rows])
        v = np.array([d for _, d in rows])
        boots = [float(v[idx].mean()) for idx in cluster_samples(patients, n_boot, seed=0)]
        res[name] = {"mean": float(v.mean()), "lo": float(np.percentile(boots, 2.5)),
                     "hi": float(np.percentile(boots, 97.5)), "n": int(len(v)), "patients": int(len(set(patients)))}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=40, help="demo volumes (all sites)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per site per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--note", default="", help="what else ran on the machine (recorded)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-fedseg-"))
    root = build_demo_dataset(work / "data", n_cases=args.cases, seed=args.seed, quiet=True)
    ds = load_dataset(root)
    fp = compute_fingerprint(ds.subset([c.case_id for c in ds.cases if c.site in TRAINING_SITES]), seed=args.seed)
    plan = make_plan(fp, memory_gb=0.5, base_filters=8, epochs=20, iterations_per_epoch=10)
    sites = {s: SegSiteTask(root, s, plan, CONFIG, seed=args.seed) for s in TRAINING_SITES}
    for t in sites.values():
        t.setup()
    unseen = [c.case_id for c in ds.cases if c.site == UNSEEN_SITE]
    seed_everything(args.seed)
    init = {k: v.detach().clone() for k, v in segmentation_model(plan, CONFIG).state_dict().items()}
    total = args.rounds * args.steps
    arms, seconds, steps = {}, {}, {}

    t0 = time.perf_counter()
    glob = init
    for rnd in range(1, args.rounds + 1):
        outs = [local_update(t, glob, args.steps, args.seed + i, rnd)[:2] for i, t in enumerate(sites.values())]
        glob = fedavg([w for w, _ in outs], [n for _, n in outs])
        print(f"fedavg round {rnd}/{args.rounds} {time.perf_counter() - t0:.0f} s", flush=True)
    arms["FedAvg A+B"], seconds["FedAvg A+B"], steps["FedAvg A+B"] = glob, time.perf_counter() - t0, 2 * total

    train_ids = [cid for t in sites.values() for cid in t.inner.train_ids]
    pooled = SegTask(ds.subset(train_ids), plan, plan.config(CONFIG), train_ids, [], args.seed, quiet=True)
    t0 = time.perf_counter()
    arms["pooled A+B"] = local_update(pooled, init, 2 * total, args.seed, 1)[0]
    seconds["pooled A+B"], steps["pooled A+B"] = time.perf_counter() - t0, 2 * total
    print(f"pooled {seconds['pooled A+B']:.0f} s", flush=True)
    for i, (s, t) in enumerate(sites.items()):
        t0 = time.perf_counter()
        arms[f"single {s}"] = local_update(t, init, total, args.seed + i, 1)[0]
        seconds[f"single {s}"], steps[f"single {s}"] = time.perf_counter() - t0, total
        print(f"single {s} {seconds[f'single {s}']:.0f} s", flush=True)
    results = {name: summarise(per_case_dice(w, plan, ds, unseen)) for name, w in arms.items()}
    results["untrained (initial weights)"] = summarise(per_case_dice(init, plan, ds, unseen))
    info = {"rounds": args.rounds, "steps": args.steps, "seconds": seconds, "optimiser_steps": steps,
            "results": results, "site_train_cases": {s: len(t.inner.train_ids) for s, t in sites.items()},
            "unseen_cases": len(unseen)}
    print(json.dumps(info, indent=1))
    if args.record:
        record_section("federated-segmentation", section(args, info))


def section(args: argparse.Namespace, info: dict) -> str:
    labels = [k for k in next(iter(info["results"].values()))]
    lines = ["## Federated segmentation on the demo sites (unseen site_C)", "", machine_line(),
             f"{args.note} One seed ({args.seed}), {args.threads} torch threads.".strip(), "",
             f"Command: `OMP_NUM_THREADS={args.threads} python benchmarks/bench_federated_seg.py --cases {args.cases} "
             f"--rounds {args.rounds} --steps {args.steps} --seed {args.seed} --threads {args.threads} --record`. "
             f"The demo's brain volumes ({args.cases} cases, sites A/B/C), the demo's 3D plan (0.5 GB, 8 base "
             "filters); "
             "training cases per site: " + ", ".join(f"{k} {v}" for k, v in info["site_train_cases"].items())
             + " (each site's other cases are its held-out ones). "
             "Arms trained in process with the federated sites' engine task; FedAvg restarts each site's AdamW every "
             "round (as the ClientApp does), pooled runs one continuous AdamW over the union of both sites' training "
             "cases. Scored on every site_C case (unit: scan; lesion only on scans holding one), plan grid, no "
             "mirroring; mean Dice with a 95 % patient-bootstrap CI (1,000 resamples).", "",
             "| arm | optimiser steps (total) | train s | "
             + " | ".join(f"site_C Dice {n} (95 % CI, n)" for n in labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for name, res in info["results"].items():
        st = info["optimiser_steps"].get(name)
        sec = info["seconds"].get(name)
        cells = [f"{res[n]['mean']:.3f} ({res[n]['lo']:.3f}-{res[n]['hi']:.3f}, {res[n]['n']})" if n in res else "n/a"
                 for n in labels]
        lines.append(f"| {name} | {st if st else 0} | {f'{sec:.0f}' if sec else '-'} | " + " | ".join(cells) + " |")
    lines += ["", f"Single sites had {args.rounds * args.steps} steps each, the same as each federated site; "
              "FedAvg and pooled had twice that in total. Single sites at the federation's total budget were not run."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
