"""medsight vs nnU-Net v2 on the demo split, on equal terms (CPU).

Equal terms: the same training cases and fold (fold 0 of the training sites), the same number of training
iterations (``--epochs`` x ``--iterations``, the demo's 20 x 10 by default; ``--equal-seconds`` instead stops both
after the epoch that passes ``--train-seconds``), the same test-time mirroring (left-right only: medsight's
``mirror_axes=[0]``, nnU-Net's ``inference_allowed_mirroring_axes`` set to the same anatomical axis after its
transpose) and the same cases scored by one Dice function. nnU-Net is given a CPU-sized plan through its own
planner option (``nnUNetv2_plan_and_preprocess -gpu_memory_target GB -overwrite_plans_name nnUNetPlans_cpu``),
not a hand-edited network. Versions are read from the installed distributions (importlib.metadata).

Needs nnunetv2 in the running environment (not in medsight's: ``pip install -c constraints.txt nnunetv2`` into a
separate venv). Status this round: NOT re-run (see docs/benchmarks.md "nnunet"); the design above is what a rerun
does. Example:
    nice -n 10 .venv-bench/bin/python benchmarks/bench_nnunet.py --seeds 0 1 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from medsight.metrics.segmentation import dice  # the same Dice for both tools

    return dice(a, b)


def _score(pred_dir: Path, ds, cases: list[str], name_of: dict[int, str]) -> dict[str, float]:
    import nibabel as nib

    out: dict[str, list[float]] = {n: [] for n in name_of.values()}
    for cid in cases:
        ref = np.asarray(nib.load(str(ds.case(cid).label)).dataobj)
        pred = np.asarray(nib.load(str(pred_dir / f"{cid}.nii.gz")).dataobj)
        for k, n in name_of.items():
            if n == "lesion" and not (ref == k).any():
                continue
            out[n].append(_dice(pred == k, ref == k))
    return {n: float(np.mean(v)) if v else float("nan") for n, v in out.items()}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def run_medsight(ds, data: Path, work: Path, fold: dict, seed: int, budget: float | None, epochs: int,
                 iterations: int) -> tuple[float, float, Path, int]:
    from medsight.data.fingerprint import compute_fingerprint
    from medsight.demo.segmentation import BASE_FILTERS, MEMORY_GB, OVERLAP
    from medsight.segmentation.predict import Predictor, write_prediction
    from medsight.io.nifti import read_nifti
    from medsight.plan.planner import make_plan
    from medsight.segmentation.train import train_fold

    if budget is not None:
        epochs = 1000  # as nnU-Net's side: a schedule for 1000 epochs, stopped by the clock
    fp = compute_fingerprint(ds.subset(fold["train"] + fold["val"]), seed=seed)
    plan = make_plan(fp, memory_gb=MEMORY_GB, base_filters=BASE_FILTERS, epochs=epochs, iterations_per_epoch=iterations)
    md = work / "medsight_model"
    md.mkdir(parents=True, exist_ok=True)
    plan.save(md / "plan.json")
    t = time.perf_counter()  # training only, as on nnU-Net's side (planning/preprocessing not counted)
    summary = train_fold(ds, plan, "3d", 0, md, fold["train"], fold["val"], seed=seed, max_seconds=budget, quiet=True,
               epochs=epochs)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    pred = Predictor(md, mirror_axes=[0], overlap=OVERLAP)
    out = work / "medsight_pred"
    for cid in fold["val"] + fold["test"]:
        write_prediction(pred.predict(read_nifti(ds.case(cid).images[0])), out / f"{cid}.nii.gz")
    return t_train, time.perf_counter() - t, out, int(summary["epochs_done"]) * iterations


def run_nnunet(ds, work: Path, fold: dict, budget: float | None, threads: int, epochs: int, iterations: int,
               memory_gb: float, seed: int) -> tuple[float, float, Path, int]:
    # raw data and nnU-Net's preprocessing are the same for every seed: made once beside the seeds' folders
    raw, pre, res = work.parent / "nnUNet_raw", work.parent / "nnUNet_preprocessed", work / "nnUNet_results"
    for p in (raw, pre, res):
        p.mkdir(parents=True, exist_ok=True)
    os.environ.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res),
                      nnUNet_n_proc_DA="1", nnUNet_compile="false")
    name = "Dataset501_MedsightDemo"
    dsdir = raw / name
    (dsdir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dsdir / "labelsTr").mkdir(parents=True, exist_ok=True)
    (dsdir / "imagesTs").mkdir(parents=True, exist_ok=True)
    train_ids = fold["train"] + fold["val"]
    for cid in train_ids:
        shutil.copy(ds.case(cid).images[0], dsdir / "imagesTr" / f"{cid}_0000.nii.gz")
        shutil.copy(ds.case(cid).label, dsdir / "labelsTr" / f"{cid}.nii.gz")
    for cid in fold["val"] + fold["test"]:
        shutil.copy(ds.case(cid).images[0], dsdir / "imagesTs" / f"{cid}_0000.nii.gz")
    meta = json.loads((ds.root / "dataset.json").read_text())
    (dsdir / "dataset.json").write_text(json.dumps({"channel_names": meta["channel_names"], "labels": meta["labels"],
                                                    "numTraining": len(train_ids), "file_ending": ".nii.gz"}))
    bindir = Path(sys.executable).parent
    if not (pre / name / f"{PLANS}.json").is_file():
        subprocess.run([str(bindir / "nnUNetv2_plan_and_preprocess"), "-d", "501", "-c", "3d_fullres", "-np", "1",
                        "-gpu_memory_target", f"{memory_gb:g}", "-overwrite_plans_name", PLANS,
                        "--verify_dataset_integrity"], check=True, stdout=subprocess.DEVNULL)
    t = time.perf_counter()  # training only (preprocessing is shared by the seeds and not counted)
    (pre / name / "splits_final.json").write_text(json.dumps([{"train": fold["train"], "val": fold["val"]}]))

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(threads)

    class _Budget(Exception):
        pass

    class BudgetTrainer(nnUNetTrainer):
        # nnU-Net records its constructor's arguments by name, so they must be spelled out here
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = 2
            self.num_epochs = epochs if budget is None else 1000

        def on_epoch_end(self):
            super().on_epoch_end()
            if budget is not None and time.perf_counter() - self._t0 > budget:
                raise _Budget()

    torch.manual_seed(seed)
    plans = load_json(str(pre / name / f"{PLANS}.json"))
    plans["continue_training"] = False  # nnunetv2 2.8 pops this key in the trainer's constructor
    trainer = BudgetTrainer(plans, "3d_fullres", 0, load_json(str(pre / name / "dataset.json")),
                            device=torch.device("cpu"))
    trainer._t0 = time.perf_counter()  # the budget counts training only
    try:
        trainer.run_training()
    except _Budget:
        pass
    trainer.save_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
    ck = torch.load(str(Path(trainer.output_folder) / "checkpoint_final.pth"), weights_only=False)
    ck["trainer_name"] = "nnUNetTrainer"
    # the same test-time mirroring as medsight: left-right only. SimpleITK arrays are (z, y, x), so the image's
    # first (left-right) axis is array axis 2 before nnU-Net's transpose_forward
    ck["inference_allowed_mirroring_axes"] = (list(plans["transpose_forward"]).index(2),)
    torch.save(ck, str(Path(trainer.output_folder) / "checkpoint_final.pth"))
    epochs_done = trainer.current_epoch
    t_train = time.perf_counter() - t
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    t = time.perf_counter()
    from medsight.demo.segmentation import OVERLAP

    # the same window overlap as medsight's (tile step = 1 - overlap), with nnU-Net's Gaussian weighting
    predictor = nnUNetPredictor(tile_step_size=1.0 - OVERLAP, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(Path(trainer.output_folder).parent), use_folds=(0,))
    out = work / "nnunet_pred"
    predictor.predict_from_files(str(dsdir / "imagesTs"), str(out), num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    print("nnU-Net epochs done:", epochs_done, flush=True)
    return t_train, time.perf_counter() - t, out, int(epochs_done) * iterations


PLANS = "nnUNetPlans_cpu"


def _run_pinned(args: argparse.Namespace, root: Path, seed: int) -> tuple[tuple, tuple]:
    """Both tools at once as child processes, medsight on core 0 and nnU-Net on core 1 (its augmentation worker
    shares that core), one torch thread each."""
    procs, results = [], []
    for core, side in enumerate(("medsight", "nnunet")):
        res = root / f"seed{seed}" / f"{side}.result.json"
        res.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--side", side, "--result", str(res), "--seeds", str(seed), "--threads", "1",
               "--epochs", str(args.epochs), "--iterations", str(args.iterations), "--train-seconds",
               str(args.train_seconds), "--nnunet-memory-gb", str(args.nnunet_memory_gb), "--lesion-profile",
               args.lesion_profile, "--work", str(root), "--no-record"] + (["--equal-seconds"] if args.equal_seconds
                                                                            else [])
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        procs.append(subprocess.Popen(["taskset", "-c", str(core % os.cpu_count())] + cmd, env=env))
        results.append(res)
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a pinned run failed (exit {p.returncode}): {p.args}")
    out = []
    for res in results:
        tr, pr, path, its = json.loads(res.read_text())
        out.append((tr, pr, Path(path), its))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--equal-seconds", action="store_true",
                    help="Stop both after the epoch that passes --train-seconds instead of equal iterations.")
    ap.add_argument("--train-seconds", type=float, default=240.0)
    ap.add_argument("--nnunet-memory-gb", type=float, default=2.0,
                    help="nnU-Net's own -gpu_memory_target for its plan (its default, 8, is GPU-sized).")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lesion-profile", default="enhancing",
                    help="Demo lesion profile (enhancing: the one medsight learns; faint: the hard one).")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--note", default="", help="Paragraph recorded under the command (what differs, the load).")
    ap.add_argument("--parallel", action="store_true",
                    help="Run both tools at once, each pinned to one core with one thread (sets --threads 1).")
    ap.add_argument("--section", default=None, help="docs/benchmarks.md section to write (default by regime).")
    ap.add_argument("--side", choices=("medsight", "nnunet"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.parallel:
        args.threads = 1
    import torch

    from medsight.data.dataset import load_dataset
    from medsight.data.splits import dataset_folds
    from medsight.demo.segmentation import OVERLAP
    from medsight.synthetic.demo import TRAINING_SITES, UNSEEN_SITE, build_demo_dataset

    torch.set_num_threads(args.threads)
    root = args.work or Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    data = build_demo_dataset(root / f"data_{args.lesion_profile}", seed=0, quiet=True,
                              lesion_profile=args.lesion_profile)
    ds = load_dataset(data)
    fold = dict(dataset_folds(ds, 5, 0, sites=TRAINING_SITES)[0])
    fold["test"] = [c.case_id for c in ds.cases if c.site == UNSEEN_SITE]
    names = ds.foreground
    budget = args.train_seconds if args.equal_seconds else None
    versions = {d: _version(d) for d in ("medsight", "nnunetv2", "torch", "monai")}
    rows: list = []

    def report() -> None:
        lines = [f"| {t} | {sd} | {tr:.0f} | {pr:.0f} | " + " | ".join(f"{h[n]:.3f}" for n in names.values()) + " | "
                 + " | ".join(f"{u[n]:.3f}" for n in names.values()) + f" | {it} |"
                 for t, sd, tr, pr, h, u, it in rows]
        hdr = (" | ".join(f"held-out {n}" for n in names.values()) + " | "
               + " | ".join(f"site_C {n}" for n in names.values()))
        terms = (f"equal wall time: each stopped after the epoch passing {args.train_seconds:.0f} s"
                 if args.equal_seconds else f"equal iterations: {args.epochs} epochs x {args.iterations} iterations each")
        section, regime = (("nnunet-wall", f"equal wall time, {args.train_seconds / 60:.0f} min each")
                           if args.equal_seconds else ("nnunet", "equal iterations"))
        section = args.section or section
        wall = f" --equal-seconds --train-seconds {args.train_seconds:.0f}" if args.equal_seconds else ""
        wall += " --parallel" if args.parallel else ""
        if args.parallel:
            terms += "; run at the same time, each tool pinned to its own core with one torch thread"
        md = "\n".join([
            f"## medsight vs nnU-Net v2 on the demo split (CPU, {regime})", "",
            f"{machine_line()} torch threads: {args.threads}. Versions (importlib.metadata): {versions}.",
            f"Command: `benchmarks/bench_nnunet.py --epochs {args.epochs} --iterations {args.iterations} --seeds "
            f"{' '.join(map(str, args.seeds))} --threads {args.threads} --lesion-profile {args.lesion_profile}{wall} "
            f"--nnunet-memory-gb {args.nnunet_memory_gb:g}`", "",
            f"Same cases: fold 0 of the training sites ({len(fold['train'])} train / {len(fold['val'])} held-out), "
            f"{len(fold['test'])} site_C cases, lesion profile {args.lesion_profile}; {terms}; both mirror left-right "
            f"only at prediction, with window overlap {OVERLAP:g} (nnU-Net tile step {1 - OVERLAP:g}); nnU-Net plans "
            f"with its own `-gpu_memory_target {args.nnunet_memory_gb:g}` (medsight's planner gets 0.5 GB). Train s = "
            "training only (planning and preprocessing not counted); Dice per class, mean over cases (lesion: cases "
            "with a lesion only).", "", args.note, "",
            f"| tool | seed | train s | predict s | {hdr} | iterations |",
            "|---|---|---|---|" + "---|" * (2 * len(names) + 1), *lines, ""])
        print(md, flush=True)
        if not args.no_record:
            record_section(section, md)

    def run_side(side: str, seed: int, work: Path) -> tuple[float, float, Path, int]:
        if side == "medsight":
            return run_medsight(ds, data, work, fold, seed, budget, args.epochs, args.iterations)
        return run_nnunet(ds, work, fold, budget, args.threads, args.epochs, args.iterations, args.nnunet_memory_gb,
                          seed)

    if args.side:  # a child of --parallel: one tool, one seed, result as JSON
        tr, pr, out, its = run_side(args.side, args.seeds[0], root / f"seed{args.seeds[0]}")
        args.result.write_text(json.dumps([tr, pr, str(out), its]))
        return
    for seed in args.seeds:
        work = root / f"seed{seed}"
        if args.parallel:
            ms, nn = _run_pinned(args, root, seed)
        else:
            ms, nn = run_side("medsight", seed, work), run_side("nnunet", seed, work)
        for tool, (tr, pr, out, its) in ((f"medsight {versions['medsight']}", ms),
                                         (f"nnU-Net v2 {versions['nnunetv2']}", nn)):
            rows.append((tool, seed, tr, pr, _score(out, ds, fold["val"], names), _score(out, ds, fold["test"], names),
                         its))
        report()  # after every seed: a long run that is stopped still leaves its finished seeds recorded


if __name__ == "__main__":
    main()
