"""Claim (issue 35): pretraining on unlabelled scans lets fewer labelled cases do the work. Target: with 10 labelled
cases the pretrained encoder reaches >= 90 % of the all-labels Dice and beats scratch by >= 0.05 Dice at 5 and 10.

Protocol: the demo dataset (MNI-template brain MRI simulated over three sites, ``synthetic/demo.py``); a fixed
patient-level test set; the rest is the unlabelled pool (labels never read) for ``medsight pretrain`` and the
labelled pool from which the first 5, 10, 20 or all cases (a seeded order) fine-tune the demo's 3D DynUNet.
Every arm runs the same optimiser steps (epochs x iterations), scratch vs pretrained, per seed; Dice per test
case on the plan's grid (grey matter, white matter; lesion on cases that have one), mean with a 95 % percentile
bootstrap CI over test cases (n = test cases). Results accumulate in a JSON file (rerun continues), then
``--record`` writes the "label-efficiency" section of docs/benchmarks.md.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_label_efficiency.py --work /tmp/le --sizes 5 10 all --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import DOC, machine_line, merged_results, record_section  # noqa: E402

N_TEST = 10
TISSUES = {1: "grey_matter", 2: "white_matter"}
LESION = 3


def _load() -> float:
    return os.getloadavg()[0]


def prepare(work: Path, n_cases: int, seed: int) -> tuple[Any, Any, list[str], list[str], Path]:
    """Demo data, the demo's plan, a patient-level test split; the unlabelled pool as image links only."""
    from medsight.data.dataset import load_dataset
    from medsight.data.fingerprint import compute_fingerprint
    from medsight.demo import segmentation as demo
    from medsight.plan.plan import Plan
    from medsight.plan.planner import make_plan
    from medsight.synthetic.demo import TRAINING_SITES, build_demo_dataset

    data = build_demo_dataset(work / "data", n_cases=n_cases, seed=seed, quiet=True)
    ds = load_dataset(data)
    patients = sorted({c.patient_id for c in ds.cases})
    order = np.random.default_rng([seed, 35]).permutation(len(patients))
    test_p = {patients[i] for i in order[:N_TEST]}
    test = [c.case_id for c in ds.cases if c.patient_id in test_p]
    pool = [c.case_id for c in ds.cases if c.patient_id not in test_p]
    labelled = [pool[i] for i in np.random.default_rng([seed, 36]).permutation(len(pool))]
    plan_path = work / "plan.json"
    if not plan_path.is_file():
        fp = compute_fingerprint(ds.subset([c.case_id for c in ds.cases if c.site in TRAINING_SITES]), seed=seed)
        make_plan(fp, memory_gb=demo.MEMORY_GB, base_filters=demo.BASE_FILTERS).save(plan_path)
    unlabelled = work / "unlabelled"
    unlabelled.mkdir(exist_ok=True)
    for cid in pool:  # images only: the pool has no labels to read
        src = ds.case(cid).images[0]
        link = unlabelled / src.name
        try:
            link.symlink_to(src)
        except FileExistsError:
            pass
    return ds, Plan.load(plan_path), test, labelled, unlabelled


def test_dice(model_dir: Path, ds: Any, plan: Any, test: list[str], cache: dict) -> list[dict[str, float]]:
    """Per test case Dice on the plan grid (tissues; lesion where the reference has one)."""
    import torch

    from medsight.data.preprocess import preprocess_case
    from medsight.metrics.segmentation import dice
    from medsight.nets.segmentation import build_model
    from medsight.segmentation.predict import plan_grid_probabilities

    cfg = plan.config("3d")
    model = build_model(cfg, len(plan.channels), len(plan.labels))
    model.load_state_dict(torch.load(model_dir / "fold_0" / "model_final.pt", weights_only=False)["model"])
    model.eval()
    rows = []
    for cid in test:
        key = ("test", cid)
        if key not in cache:
            cache[key] = preprocess_case(ds.case(cid), plan, cfg)
        pre = cache[key]
        prob, _ = plan_grid_probabilities([model], pre.image, cfg, [], 0.25)
        pred = prob.argmax(0).numpy()
        row = {"case_id": cid, **{n: dice(pred == k, pre.label == k) for k, n in TISSUES.items()}}
        row["tissue_mean"] = float(np.mean([row[n] for n in TISSUES.values()]))
        row["lesion"] = dice(pred == LESION, pre.label == LESION) if (pre.label == LESION).any() else None
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> None:
    import torch

    from medsight.files import atomic_write_text
    from medsight.pretrain.run import pretrain

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDSIGHT_HOME", str(work / "home"))
    # one file per process: arms and sizes may run in parallel processes
    results_path = work / f"results_{'_'.join(args.arms)}_{'_'.join(args.sizes)}.json"
    res: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {"arms": {}}
    done = _merged(work)  # runs (and the pretraining record) of earlier processes with other arms/sizes/seeds
    if "pretrain" in done and "pretrain" not in res:
        res["pretrain"] = done["pretrain"]
    ds, plan, test, labelled, unlabelled = prepare(work, args.cases, 0)
    res.update({"test_cases": test, "labelled_pool": len(labelled), "unlabelled_pool": len(labelled),
                "fine_tune_steps": args.epochs * args.iterations, "threads": args.threads})
    enc = work / "encoder"
    if args.encoder and "pretrain" not in res:  # an encoder package pretrained elsewhere (e.g. the acceptance run)
        res["pretrain"] = _given_encoder(Path(args.encoder), enc, args.encoder_wall, args.encoder_load)
        atomic_write_text(results_path, json.dumps(res, indent=2))
    while args.wait_encoder and not (enc / "manifest.json").is_file():  # another process pretrains it
        time.sleep(10)
    if "pretrained" in args.arms and "pretrain" not in res and not args.wait_encoder:
        t, load0 = time.perf_counter(), _load()
        _, summary = pretrain(unlabelled, enc, plan, "3d", args.method, args.pre_epochs, args.pre_iterations,
                              seed=0, quiet=True, max_seconds=None if args.pre_minutes is None else
                              args.pre_minutes * 60)
        res["pretrain"] = {"method": args.method, "epochs": args.pre_epochs, "iterations": args.pre_iterations,
                           "batch": summary["training"]["batch_size"], "wall_s": round(time.perf_counter() - t, 1),
                           "train_s": summary["training"]["seconds_this_run"], "energy": summary.get("energy"),
                           "epochs_done": summary["training"]["epochs_done"],
                           "final_val_loss": summary["training"]["final_val_loss"], "load_1min": [load0, _load()]}
        atomic_write_text(results_path, json.dumps(res, indent=2))
    cache: dict = {}
    _memoise_preprocessing(cache)
    for seed in args.seeds:
        for size in args.sizes:
            n = len(labelled) if size == "all" else int(size)
            for arm in args.arms:
                key = f"{arm}/{size}/{seed}"
                if key in res["arms"] or key in done["arms"]:
                    continue
                ids = labelled[:n]
                t, load0 = time.perf_counter(), _load()
                out = work / "runs" / key.replace("/", "_")
                _train_steps(ds, plan, out, ids, seed, args, enc if arm == "pretrained" else None)
                train_s = time.perf_counter() - t
                rows = test_dice(out, ds, plan, test, cache)
                res["arms"][key] = {"arm": arm, "labelled": n, "seed": seed, "train_s": round(train_s, 1),
                                    "steps": args.epochs * args.iterations, "eval_s": round(time.perf_counter() - t
                                                                                          - train_s, 1),
                                    "load_1min": [load0, _load()], "cases": rows}
                atomic_write_text(results_path, json.dumps(res, indent=2))
                print(key, round(train_s), np.mean([r["tissue_mean"] for r in rows]), flush=True)


def _memoise_preprocessing(cache: dict) -> None:
    """Each case preprocessed once per process, for training (24 runs share the labelled cases) as for testing:
    preprocessing is deterministic, so this changes time only, not a single voxel."""
    from medsight.data import preprocess
    from medsight.segmentation import sampling

    def cached(case, plan, cfg):  # noqa: ANN001, ANN202 - preprocess_case's signature
        key = (case.case_id, plan.sha256(), cfg.name if hasattr(cfg, "name") else id(cfg))
        if key not in cache:
            cache[key] = preprocess.preprocess_case(case, plan, cfg)
        return cache[key]

    sampling.preprocess_case = cached


def _merged(work: Path) -> dict[str, Any]:
    """All processes' result files merged (each process writes its own; a rerun skips what any of them holds)."""
    return merged_results(work, "results_*.json", "arms")


def _given_encoder(src: Path, enc: Path, wall: float | None, load: list[float] | None) -> dict[str, Any]:
    """Copy a verified encoder package to ``enc`` and take its cost from its own records."""
    import shutil

    from medsight.package.package import load_package

    if not enc.exists():
        shutil.copytree(load_package(src).path, enc)
    desc = json.loads((enc / "encoder.json").read_text())
    t = desc["training"]
    return {"method": desc["method"], "epochs": t["epochs_planned"], "iterations": t["iterations"],
            "batch": t["batch_size"], "wall_s": wall, "train_s": t["seconds_this_run"], "energy": desc.get("energy"),
            "epochs_done": t["epochs_done"], "final_val_loss": t["final_val_loss"], "load_1min": load or [],
            "volumes": desc["data"]["volumes"], "given": str(src)}


def _train_steps(ds, plan, out, ids, seed, args, enc):  # noqa: ANN001, ANN202
    """Fine-tune for ``args.epochs`` x ``args.iterations`` steps (the same for every arm)."""
    from dataclasses import replace

    from medsight.segmentation.train import train_fold

    cfg = replace(plan.config("3d"), iterations_per_epoch=args.iterations)
    p2 = replace(plan, configurations={**plan.configurations, "3d": cfg})
    return train_fold(ds, p2, "3d", 0, out, ids, [], seed=seed, epochs=args.epochs, quiet=True, init=enc)


def _ci(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    from medsight.metrics.bootstrap import bootstrap_ci

    return bootstrap_ci(lambda v: float(np.mean(v)), np.asarray(values, dtype=float), n_boot=2000, seed=seed)


def record(args: argparse.Namespace) -> None:
    """The "label-efficiency" section: segmentation table, classification table (``--cls-work``), texts."""
    res = _merged(Path(args.work))
    arms = res["arms"]
    steps = {a.get("steps", res["fine_tune_steps"]) for a in arms.values()}
    if len(steps) != 1:  # the table claims equal iterations per arm
        raise SystemExit(f"runs with different fine-tuning steps {sorted(steps)}: move the odd ones out of the work")
    res["fine_tune_steps"] = steps.pop()
    seg = _segmentation_lines(args, res)
    if args.seg_only:  # replace the segmentation subsection only; the rest of the section stays as recorded
        begin, end = "<!-- BEGIN label-efficiency -->", "<!-- END label-efficiency -->"
        section = DOC.read_text().split(begin, 1)[1].split(end, 1)[0].strip()
        head, rest = section.split("### Segmentation (3D)", 1)
        tail = rest[rest.index("### Classification (2D)"):]
        record_section("label-efficiency", head + "\n".join(seg) + "\n\n" + tail)
        return
    lines = ["## Label efficiency: self-supervised pretraining vs scratch vs ImageNet (issue 35)", "", machine_line(),
             "", f"Machine load: {args.load_note}", ""]
    if args.acceptance:
        lines += [f"Acceptance (`medsight pretrain` on the demo's unlabelled volumes, default options): "
                  f"{args.acceptance}", ""]
    lines += seg
    if args.cls_work:
        from bench_label_efficiency_cls import header, table

        lines += ["", "### Classification (2D)", "", *header(Path(args.cls_work)), *table(Path(args.cls_work))]
    if args.reading:
        lines += ["", f"Reading: {args.reading}"]
    lines += ["", f"Reduced from the issue's protocol: {args.reduced}", "", "Commands: " + args.command]
    record_section("label-efficiency", "\n".join(lines))


def _segmentation_lines(args: argparse.Namespace, res: dict[str, Any]) -> list[str]:
    """The "### Segmentation (3D)" subsection: data, pretraining cost, the table, the targets."""
    arms, pre = res["arms"], res["pretrain"]
    sizes = sorted({(a["labelled"]) for a in arms.values()})
    loads = [x for a in arms.values() for x in a["load_1min"]] + list(pre["load_1min"])
    n_all = len(res["test_cases"]) + res["labelled_pool"]
    pool = (f"all {pre['volumes']} demo volumes, test images included (labels never read, as the issue's protocol "
            "says)" if pre.get("given") else f"the {res['labelled_pool']} non-test volumes (images only)")
    lines = [
        "### Segmentation (3D)", "", *([args.seg_note, ""] if args.seg_note else []),
        f"Data: the demo dataset ({n_all} simulated brain MRI cases from the MNI template, three sites); test set "
        f"{len(res['test_cases'])} cases (patient-level, fixed); labelled pool {res['labelled_pool']} cases (first n of "
        "a seeded order, the same for every seed). Network: the demo's 3D DynUNet (plan of `medsight demo`, filters "
        "8-128, patch 48x64x64, batch 2). **No ImageNet arm: there are no ImageNet weights for a 3D network here** "
        "(the only ImageNet weights installed are the 2D EfficientNet-Lite0's, used in the classification table).",
        _pretraining_line(Path(args.work) / "encoder", pre, pool),
        f"Fine-tuning: {res['fine_tune_steps']} optimiser steps for every arm (equal iterations), poly schedule, "
        f"no validation selection (last weights), torch threads {res['threads']}; 1-minute load average "
        f"{min(loads):.1f}-{max(loads):.1f} during these runs.", "",
        f"Dice per test case (unit: case, n = {len(res['test_cases'])} test cases) on the plan's grid (sliding window, "
        "overlap 0.25, no mirroring), mean over grey and white matter, "
        "95 % percentile bootstrap CI (2,000 resamples over cases) of the mean over seeds; difference = pretrained - "
        "scratch, paired by case; lesion Dice on the test cases that have a lesion:", "",
        "| labelled cases | seeds | scratch Dice [95 % CI] | pretrained Dice [95 % CI] | difference | Dice per seed "
        "(scratch; pretrained) | scratch lesion | pretrained lesion | fine-tune s (scratch / pretrained) |",
        "|---|---|---|---|---|---|---|---|---|"]
    means: dict[tuple[str, int], float] = {}
    for n in sizes:
        row = {}
        for arm in ("scratch", "pretrained"):
            runs = sorted((a for a in arms.values() if a["arm"] == arm and a["labelled"] == n),
                          key=lambda a: a["seed"])
            if not runs:
                continue
            per_case = np.mean([[c["tissue_mean"] for c in r["cases"]] for r in runs], axis=0)  # mean over seeds
            lesion = [c["lesion"] for r in runs for c in r["cases"] if c["lesion"] is not None]
            row[arm] = (_ci(list(per_case)), [r["seed"] for r in runs], float(np.mean(lesion)) if lesion else
                        float("nan"), float(np.mean([r["train_s"] for r in runs])), per_case,
                        " ".join(f"{np.mean([c['tissue_mean'] for c in r['cases']]):.3f}" for r in runs))
            means[(arm, n)] = row[arm][0][0]
        if len(row) < 2:
            continue
        (s, ss, ls, ts, pcs, qs), (p, sp, lp, tp, pcp, qp) = row["scratch"], row["pretrained"]
        d = _ci(list(pcp - pcs)) if ss == sp else (float("nan"),) * 3
        seeds = f"{', '.join(map(str, ss))}" if ss == sp else f"{ss} / {sp}"
        lines.append(f"| {n} | {seeds} | {s[0]:.3f} [{s[1]:.3f}, {s[2]:.3f}] | {p[0]:.3f} [{p[1]:.3f}, {p[2]:.3f}] | "
                     f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] | {qs}; {qp} | {ls:.3f} | {lp:.3f} | {ts:.0f} / {tp:.0f} |")
    full = max(sizes)
    lines += ["", "Targets (measured on this run):"]
    if ("pretrained", 10) in means and ("pretrained", full) in means:
        r = means[("pretrained", 10)] / means[("pretrained", full)]
        lines.append(f"- pretrained with 10 labelled cases reaches {100 * r:.1f} % of its all-labels ({full}) Dice "
                     f"-> target >= 90 %: **{'met' if r >= 0.9 else 'not met'}**.")
    for n in (5, 10):
        if ("pretrained", n) in means and ("scratch", n) in means:
            gain = means[("pretrained", n)] - means[("scratch", n)]
            lines.append(f"- gain over scratch at {n} cases: {gain:+.3f} Dice -> target >= +0.05: "
                         f"**{'met' if gain >= 0.05 else 'not met'}**.")
    lines += ["", "Fine-tune s: mean wall seconds per run under shifting load: not a comparison of the arms' cost, "
              "which is equal by design (same steps, same network)."]
    return lines


def _runs(enc: Path) -> list[list[float]]:
    """The log's cumulative seconds split into runs (a resumed run restarts the clock)."""
    runs: list[list[float]] = [[]]
    for line in (enc / "log.jsonl").read_text().splitlines():
        sec = json.loads(line)["seconds"]
        if runs[-1] and sec < runs[-1][-1]:
            runs.append([])
        runs[-1].append(sec)
    return runs


def _pretraining_line(enc: Path, pre: dict[str, Any], pool: str) -> str:
    """Pretraining cost from the encoder package (steps, CPU-seconds and energy of its last run; a resumed run
    records only its own) and the wall time measured around it."""
    desc = json.loads((enc / "encoder.json").read_text())
    log = [json.loads(x) for x in (enc / "log.jsonl").read_text().splitlines()]
    t, e, runs = desc["training"], pre.get("energy") or {}, _runs(enc)
    steps, last = t["epochs_done"] * t["iterations"], t["iterations"] * len(runs[-1])
    wall = (f"{pre['wall_s']:.0f} s wall end to end" if pre.get("given") and pre.get("wall_s") else
            f"{sum(r[-1] for r in runs):.0f} s of training wall time over {len(runs)} run(s)")
    cpu = e.get("cpu_seconds", float("nan"))
    return (f"Pretraining: `{desc['method']}` on {pool}, {t['epochs_done']} epochs x {t['iterations']} steps "
            f"(batch {t['batch_size']}, {steps} steps; planned {t['epochs_planned']} epochs): {wall}; "
            f"**{cpu / max(1, last):.1f} CPU-s per step** ({cpu:.0f} CPU-s for the last run's {last} steps, validation "
            f"included; energy {e.get('kwh', float('nan')) * 1000:.2f} Wh "
            f"{'measured' if e.get('measured') else 'estimated'}); held-out pretext loss {log[0]['val_loss']:.3f} after "
            f"epoch 1 -> {t['final_val_loss']:.3f}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--sizes", nargs="+", default=["5", "10", "20", "all"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--method", default="restore")
    ap.add_argument("--pre-epochs", type=int, default=20)
    ap.add_argument("--pre-iterations", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pre-minutes", type=float, default=None, help="Pretraining time budget (engine's).")
    ap.add_argument("--encoder", default=None, help="Use this encoder package (pretrained elsewhere) for the "
                    "pretrained arm; --encoder-wall / --encoder-load: its measured wall seconds and load averages.")
    ap.add_argument("--encoder-wall", type=float, default=None)
    ap.add_argument("--encoder-load", type=float, nargs="*", default=None)
    ap.add_argument("--wait-encoder", action="store_true", help="Wait for another process's encoder package.")
    ap.add_argument("--arms", nargs="+", default=["scratch", "pretrained"], choices=["scratch", "pretrained"])
    ap.add_argument("--record", action="store_true", help="Write the docs section from the results JSON.")
    ap.add_argument("--reduced", default="none", help="What was reduced, for the docs section.")
    ap.add_argument("--reading", default="", help="What the table says, for the docs section.")
    ap.add_argument("--command", default="`benchmarks/bench_label_efficiency.py`")
    ap.add_argument("--cls-work", default=None, help="Work folder of bench_label_efficiency_cls.py (its table).")
    ap.add_argument("--acceptance", default="", help="The timed acceptance run, for the docs section.")
    ap.add_argument("--seg-only", action="store_true", help="With --record: rewrite only the segmentation "
                    "subsection of the recorded section.")
    ap.add_argument("--seg-note", default="", help="A note above the segmentation table (e.g. which run it is).")
    ap.add_argument("--load-note", default="", help="How loaded the machine was, for the docs section.")
    args = ap.parse_args()
    record(args) if args.record else run(args)


if __name__ == "__main__":
    main()
