"""Federated A+B vs pooled A+B vs single sites on the unseen site C; Flower's seconds and bytes per round; AUC vs eps.

``--data demo`` (the recorded default): the demo's three scanner sites, lesion-presence on the classification
demo's slices (``medsight.synthetic.demo_cls``, enhancing lesions), the demo classifier's evidence-map ResNet.
``--data toy``: discs on a site-shifted background (``medsight.federated.toy``) and the small two-conv classifier.
Every arm has the same optimiser-step budget per site (rounds x local steps; pooled: twice that on A+B).
In-process arms call the very functions the ClientApp/ServerApp call (engine.local_update, clip_and_noise, fedavg)
without the transport; one arm is a real Flower run (SuperLink + 2 SuperNodes on 127.0.0.1) for seconds and bytes.

    python benchmarks/bench_federated.py --data demo --runs 1
    python benchmarks/bench_federated.py --data toy --runs 3
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

from medsight.data.manifest import read_classification_manifest  # noqa: E402
from medsight.engine.loop import local_update  # noqa: E402
from medsight.engine.seeding import seed_everything  # noqa: E402
from medsight.federated.aggregate import fedavg  # noqa: E402
from medsight.federated.privacy import GaussianAccountant, apply_delta, clip_and_noise, weights_delta  # noqa: E402
from medsight.federated.dpsgd import dpsgd_update  # noqa: E402
from medsight.federated.site import SMALL, ProxTask, SiteTask, load_images, site_model  # noqa: E402
from medsight.federated.toy import make_sites  # noqa: E402
from medsight.metrics.classification import roc_auc, roc_auc_delong  # noqa: E402
from medsight.metrics.bootstrap import bootstrap_ci  # noqa: E402

MODEL = {"backbone": SMALL, "size": 32, "label": None, "batch": 16, "lr": 3e-3, "balanced": False}  # set by main() per --data


def site_c(manifest: Path, site: str | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    m = read_classification_manifest(manifest, labels=[MODEL["label"]] if MODEL["label"] else None, task="binary")
    keep = np.ones(len(m.y), bool) if site is None else m.sites == site
    paths = [p for p, k in zip(m.image_paths, keep) if k]
    return load_images(paths, MODEL["size"]), m.y[keep, 0], np.asarray(m.patients)[keep]


def score(weights: dict, x: torch.Tensor, y: np.ndarray, patients: np.ndarray) -> dict:
    model = site_model(MODEL["backbone"], MODEL["size"])
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        p = torch.cat([torch.sigmoid(model(x[i:i + 256])) for i in range(0, len(x), 256)]).numpy()[:, 0]
    auc, lo, hi = roc_auc_delong(y, p)
    # slices of one patient are correlated: the patient-level (cluster) bootstrap interval is the honest one
    _, plo, phi = bootstrap_ci(roc_auc, y, p, n_boot=1000, seed=0, groups=patients)
    return {"auc": auc, "lo": lo, "hi": hi, "plo": plo, "phi": phi, "acc": float(((p >= 0.5) == (y >= 0.5)).mean())}


def task_for(manifest: Path, site: str, seed: int) -> SiteTask:
    return SiteTask(manifest, site, size=MODEL["size"], backbone=MODEL["backbone"], label=MODEL["label"],
                    batch_size=MODEL["batch"], lr=MODEL["lr"], seed=seed, balanced=MODEL["balanced"])


def init(seed: int) -> dict:
    seed_everything(seed)
    return {k: v.clone() for k, v in site_model(MODEL["backbone"], MODEL["size"]).state_dict().items()}


def demo_sites(root: Path, n_cases: int, seed: int) -> tuple[dict[str, Path], Path, Path]:
    """Per-site manifests (rows of that site only) of the classification demo's slices, the pooled A+B
    manifest and the site_C test manifest, all beside the slices so that image paths resolve."""
    import pandas as pd

    from medsight.demo.classification import CLS_LESION_PROFILE, CLS_LESION_SHARE
    from medsight.synthetic.demo_cls import build_demo_cls_dataset, with_splits

    manifest = build_demo_cls_dataset(root, n_cases=n_cases, seed=seed, quiet=True, lesion_share=CLS_LESION_SHARE,
                                      lesion_profile=CLS_LESION_PROFILE)
    table = pd.read_csv(with_splits(manifest, root / "manifest_split.csv", seed=seed), dtype=str,
                        keep_default_na=False).drop(columns=["large_lesion"])
    table["split"] = table["split"].replace({"val": "train"})  # a site trains on train+val, checks on test
    out = {}
    for site in ("site_A", "site_B"):
        out[site] = root / f"fed_{site}.csv"
        table[table["site"] == site].to_csv(out[site], index=False)
    pooled = table[table["site"].isin(["site_A", "site_B"])].assign(site="AB")
    pooled.to_csv(root / "fed_pooled_AB.csv", index=False)
    table[table["site"] == "site_C"].to_csv(root / "fed_site_C.csv", index=False)
    return out, root / "fed_pooled_AB.csv", root / "fed_site_C.csv"


def federated(tasks: list[SiteTask], rounds: int, steps: int, seed: int, sigma: float = 0.0, clip: float = 1.0,
              mu: float = 0.0) -> tuple[dict, float]:
    """FedAvg rounds in process (FedProx when ``mu`` > 0, client-level DP when ``sigma`` > 0)."""
    glob, acc = init(seed), GaussianAccountant(1e-5)
    for rnd in range(1, rounds + 1):
        states, ns = [], []
        for i, t in enumerate(tasks):
            new, n, _ = local_update(ProxTask(t, glob, mu) if mu > 0 else t, glob, steps, seed * 100 + i, rnd)
            if sigma > 0:
                # a seeded generator keeps the benchmark repeatable; a site's ClientApp never passes one
                gen = torch.Generator().manual_seed(seed * 7 + rnd + i)
                new = apply_delta(glob, clip_and_noise(weights_delta(new, glob), clip, sigma, gen)[0])
            states.append(new)
            ns.append(n)
        if sigma > 0:
            acc.spend(sigma)
        glob = fedavg(states, ns)
    return glob, acc.epsilon()


def federated_dpsgd(tasks: list[SiteTask], rounds: int, steps: int, seed: int, sigma: float, clip: float
                    ) -> tuple[dict, float]:
    """FedAvg rounds whose local steps are DP-SGD (Opacus) at every site; eps of one site (all sites alike)."""
    glob, acc = init(seed), GaussianAccountant(1e-5)
    for rnd in range(1, rounds + 1):
        outs = [dpsgd_update(t, glob, steps, seed * 100 + i, sigma, clip,  # seeded draws: repeatable benchmark only
                             noise=torch.Generator().manual_seed(seed * 1_000 + rnd + 10 * i),
                             draw=torch.Generator().manual_seed(seed * 1_000 + rnd + 10 * i + 1))
                for i, t in enumerate(tasks)]
        acc.spend_sampled(sigma, outs[0][3], steps)
        glob = fedavg([o[0] for o in outs], [o[1] for o in outs])
    return glob, acc.epsilon()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=("demo", "toy"), default="demo")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--n", type=int, default=None, help="toy: images per site (80); demo: volumes (200)")
    ap.add_argument("--rounds", type=int, default=None, help="toy 5, demo 10")
    ap.add_argument("--steps", type=int, default=None, help="local steps per round: toy 10, demo 60")
    ap.add_argument("--contrast", type=float, default=15.0, help="toy: disc brightness over the background (sd 12)")
    ap.add_argument("--dp-clip", type=float, default=None, help="L2 clip of a site's update (toy 0.1, demo 1.0)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=None, help="DP noise multipliers (toy 0.5 1 2)")
    ap.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight")
    ap.add_argument("--dpsgd-sigmas", type=float, nargs="*", default=[],
                    help="sample-level DP-SGD noise multipliers (networks without BatchNorm: toy data)")
    ap.add_argument("--dpsgd-clip", type=float, default=1.0, help="per-example gradient clip of DP-SGD")
    ap.add_argument("--batch", type=int, default=None, help="toy: batch size of every arm (16)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--no-flower", action="store_true")
    ap.add_argument("--note", default="", help="Paragraph recorded under the command (the load, what differs).")
    args = ap.parse_args()
    demo = args.data == "demo"
    d = dict(n=200, rounds=10, steps=60, dp_clip=1.0, sigmas=[0.3, 1.0]) if demo else \
        dict(n=80, rounds=5, steps=10, dp_clip=0.1, sigmas=[0.5, 1.0, 2.0])
    for k, v in d.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.batch and not demo:
        MODEL["batch"] = args.batch
    if demo:  # the demo classifier's network and input size (medsight.demo.classification.demo_config)
        MODEL.update(backbone="resnet10-slim-evidence", size=96, label="lesion", batch=32, lr=2e-3, balanced=True)
    torch.set_num_threads(args.threads)
    tmp = args.work or Path(tempfile.mkdtemp(prefix="bench-fed-"))
    if demo:
        sites, pooled, test = demo_sites(tmp / "data_demo", args.n, 0)
        names = ("site_A", "site_B")
        xc, yc, pc = site_c(test)
    else:
        toy = make_sites(tmp / "data", n=args.n, contrast=args.contrast)
        sites, names = {"A": toy["A"], "B": toy["B"]}, ("A", "B")
        pooled = tmp / "data" / "pooled.csv"
        rows = [toy["A"].read_text().splitlines()[0]]
        for s in "AB":
            rows += [f"site_{s}/{line}" for line in toy[s].read_text().splitlines()[1:]]
        pooled.write_text("\n".join(r.replace(",A,", ",AB,").replace(",B,", ",AB,") for r in rows) + "\n")
        xc, yc, pc = site_c(toy["C"])
    budget = args.rounds * args.steps
    arms: dict[str, list[dict]] = {}
    times: dict[str, list[float]] = {}

    def arm(name: str, fn) -> None:  # noqa: ANN001
        t0 = time.perf_counter()
        w, eps = fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
        result = score(w, xc, yc, pc)
        arms.setdefault(name if eps is None else f"{name} (eps={eps:.2f}, delta=1e-5)", []).append(result)
        print(name, result, flush=True)

    for run in range(args.runs):
        ta, tb, tab = task_for(sites[names[0]], names[0], run), task_for(sites[names[1]], names[1], run), \
            task_for(pooled, "AB", run)
        for t in (ta, tb, tab):
            t.setup()  # images loaded before the clock starts: the time column is training only
        for name, t, steps in ((f"single {names[0]}", ta, budget), (f"single {names[1]}", tb, budget),
                               ("pooled A+B", tab, 2 * budget)):  # pooled: both sites' step budget
            arm(name, lambda t=t, steps=steps: (local_update(t, init(run), steps, run, 0)[0], None))
        arm("federated A+B, FedAvg", lambda: (federated([ta, tb], args.rounds, args.steps, run)[0], None))
        arm(f"federated A+B, FedProx mu={args.mu:g}",
            lambda: (federated([ta, tb], args.rounds, args.steps, run, mu=args.mu)[0], None))
        for s in args.sigmas:
            arm(f"federated A+B, DP sigma={s:g}, clip={args.dp_clip:g}",
                lambda s=s: federated([ta, tb], args.rounds, args.steps, run, sigma=s, clip=args.dp_clip))
        for s in args.dpsgd_sigmas:
            arm(f"federated A+B, DP-SGD per example sigma={s:g}, clip={args.dpsgd_clip:g}",
                lambda s=s: federated_dpsgd([ta, tb], args.rounds, args.steps, run, s, args.dpsgd_clip))
    flower = None
    if not args.no_flower:
        from medsight.federated.launch import run_federation

        t0 = time.perf_counter()
        out = tmp / "flower"
        cfg = {"rounds": args.rounds, "local-steps": args.steps, "min-sites": 2, "seed": 0,
               "round-timeout": 1800.0, "backbone": MODEL["backbone"], "image-size": MODEL["size"],
               "label": MODEL["label"] or "", "batch-size": MODEL["batch"], "lr": MODEL["lr"],
               "balanced": MODEL["balanced"]}
        res = run_federation({names[0]: sites[names[0]], names[1]: sites[names[1]]}, out, cfg,
                             timeout=args.rounds * 1800 + 300)
        wall = time.perf_counter() - t0
        w = torch.load(out / "model.pt")
        flower = {"wall": wall, "round_s": [r["seconds"] for r in res["rounds"]],
                  "sent": [r["bytes_sent"] for r in res["rounds"]], "recv": [r["bytes_received"] for r in res["rounds"]],
                  "c": score(w, xc, yc, pc), "last": res["rounds"][-1]}
    record(args, arms, times, flower, len(yc), int(yc.sum()), len(set(pc.tolist())), sites, names)


def record(args: argparse.Namespace, arms: dict, times: dict, flower: dict | None, n_c: int, pos_c: int,
           patients_c: int, sites: dict, names: tuple[str, str]) -> None:
    demo = args.data == "demo"
    cmd = (f"python benchmarks/bench_federated.py --data {args.data} --runs {args.runs} --n {args.n} --rounds "
           f"{args.rounds} --steps {args.steps} --dp-clip {args.dp_clip:g} --sigmas {' '.join(f'{s:g}' for s in args.sigmas)}"
           f" --threads {args.threads}" + ("" if demo else f" --contrast {args.contrast} --batch {MODEL['batch']}")
           + (f" --dpsgd-sigmas {' '.join(f'{s:g}' for s in args.dpsgd_sigmas)} --dpsgd-clip {args.dpsgd_clip:g}"
              if args.dpsgd_sigmas else ""))
    n_rows = {s: len(read_classification_manifest(p, labels=[MODEL["label"]] if MODEL["label"] else None,
                                                  task="binary").y) for s, p in sites.items()}
    data = (f"The demo's scanner sites: lesion presence on axial slices of {args.n} generated volumes "
            f"(`medsight.synthetic.demo_cls`, enhancing lesions); site_A {n_rows[names[0]]} slices, site_B "
            f"{n_rows[names[1]]} (each trains on its train+val patients and checks on its test patients); the demo "
            f"classifier's network ({MODEL['backbone']}, {MODEL['size']} px, batch {MODEL['batch']} drawn class-balanced, "
            f"Adam lr {MODEL['lr']:g}, no augmentation; the demo's own classifier adds flips and CarveMix)." if demo else
            f"Synthetic toy sites (`medsight.federated.toy`, {args.n} 32x32 images per site, disc = positive, "
            f"background level shifted per site); the small 2-conv classifier, batch {MODEL['batch']} (DP-SGD: the "
            "expected Poisson batch), Adam lr 3e-3.")
    lines = [f"## Federated learning (Flower): site_C unseen ({'demo sites' if demo else 'toy sites'})", "",
             machine_line() + f" torch threads: {args.threads}.", "", f"Command: `{cmd}`", "", data,
             f"Every arm has the same optimiser steps per site ({args.rounds} rounds x {args.steps} local steps; "
             f"single sites {args.rounds * args.steps} steps; pooled: twice that on A+B together). Test set: all of "
             f"site C, never trained on: n = {n_c} {'slices' if demo else 'images'} ({pos_c} positive) of "
             f"{patients_c} patients. AUC with the patient-level (cluster) bootstrap 95% CI and DeLong's (which "
             "treats slices as independent) of the first run; median over runs when runs > 1 (runs differ in the "
             "seed).", "", args.note, "",
             "| arm | site_C AUC, median (n runs) | run 0: patient bootstrap 95% CI | run 0: DeLong 95% CI | "
             "accuracy at 0.5, median | training s (in-process, run 0) |", "|---|---|---|---|---|---|"]
    for name, rs in arms.items():
        base = name.split(" (eps=")[0]
        lines.append(f"| {name} | {median([r['auc'] for r in rs]):.3f} ({len(rs)}) | {rs[0]['plo']:.3f}-"
                     f"{rs[0]['phi']:.3f} | {rs[0]['lo']:.3f}-{rs[0]['hi']:.3f} | "
                     f"{median([r['acc'] for r in rs]):.3f} | {times[base][0]:.0f} |")
    if flower:
        c, last = flower["c"], flower["last"]
        per = ", ".join(f"{s} AUC {m['auc']:.3f} ECE {m['ece']:.3f} (n = {int(m['n'])})"
                        for s, m in sorted(last["evaluate"].items()))
        lines += ["", f"Real Flower run (SuperLink + 2 SuperNodes as processes on 127.0.0.1, FedAvg, seed 0, n = 1 run, "
                  f"the same {args.rounds} rounds x {args.steps} local steps, each site's ClientApp on one torch "
                  f"thread): site_C AUC {c['auc']:.3f} (patient bootstrap {c['plo']:.3f}-{c['phi']:.3f}); each site's "
                  f"own held-out patients after the last round: {per}. Wall {flower['wall']:.0f} s including start-up; "
                  f"seconds per round: median {median(flower['round_s']):.1f} (min {min(flower['round_s']):.1f}, max "
                  f"{max(flower['round_s']):.1f}; a round = a train and an evaluate message per site, each handled by a "
                  "fresh ClientApp process that imports torch and reloads the site's images); model bytes per round: "
                  f"sent {flower['sent'][0]:,}, received {flower['recv'][0]:,} (the weights, both sites together; "
                  "protocol overhead not counted). It differs from the in-process FedAvg arm in the transport and in "
                  "each site's seed stream, not in the computation."]
    lines += ["", "Server memory over a long run: section \"Federated server memory over a long run\" "
              "(benchmarks/bench_federated_memory.py)."]
    record_section("federated" if demo else "federated-toy", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
