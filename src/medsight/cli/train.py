"""``medsight train DATASET``: train a configuration of the plan on one fold or all (resumes if interrupted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--config", "config", type=click.Choice(["2d", "2.5d", "3d"]), default="3d", show_default=True)
@click.option("--fold", default="0", show_default=True, help="Fold number 0-4, 'all' (train on every case) or 'cv' "
              "(all five folds in turn).")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), default=None,
              help="Plan JSON (default: DATASET/medsight_plan.json).")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: DATASET/medsight_models/<config>).")
@click.option("--epochs", type=int, default=None, help="Override the plan's epoch count.")
@click.option("--seed", default=0, show_default=True)
@click.option("--sites", default=None, help="Comma-separated sites to train on (manifest 'site'); default all.")
@click.option("--max-minutes", type=float, default=None, help="Stop after the epoch that passes this time.")
@click.option("--network", default=None, help="Train this registered network (built-in or from an installed "
              "plug-in) instead of the plan's; recorded in the model folder's plan.json.")
@click.option("--nproc", type=int, default=1, show_default=True, help="Data-parallel processes on this machine "
              "(PyTorch DDP: gloo on CPU, NCCL on GPU). For several machines use torchrun (docs/segmentation.md).")
@click.option("--name", default=None, help="Registry name of the model package (default: <dataset>-<config>).")
@click.option("--init", "init", default=None, help="Start from this encoder package (`medsight pretrain`): "
              "verified, must fit the network; its id is recorded in the model's summary, manifest and card.")
@click.pass_context
@audited("train", inputs=("dataset",))
def train(ctx: click.Context, dataset: Path, config: str, fold: str, plan_path: Path | None, model_dir: Path | None,
          epochs: int | None, seed: int, sites: str | None, max_minutes: float | None, network: str | None,
          nproc: int, name: str | None, init: str | None) -> None:
    """Train a segmentation network on DATASET with a patient-level 5-fold split.

    Writes a checkpoint after every epoch (atomically); run the same command again after a kill and it resumes,
    ending with the same weights as an uninterrupted run. Training state and TensorBoard logs live in
    MODEL_DIR.training/; MODEL_DIR itself is the verified, registered model package (every finished fold).
    """
    from dataclasses import replace

    from medsight.data.dataset import load_dataset, validate
    from medsight.data.splits import dataset_folds, save_folds
    from medsight.engine import distributed as dd
    from medsight.errors import ConfigError
    from medsight.nets.segmentation import available_networks
    from medsight.plan.plan import Plan
    from medsight.engine.energy import EnergyMeter
    from medsight.package.package import load_package
    from medsight.segmentation.package import package_segmentation, training_dir
    from medsight.segmentation.train import train_fold

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and dd.env_world_size() == 1:
        ctx.exit(dd.launch(nproc, ["medsight.cli.main", *(["-q"] if quiet else []), "train",
                                   *_forward(ctx.params)]))
    dd.init_from_env()
    ds = load_dataset(dataset)
    validate(ds)
    p = Plan.load(plan_path or Path(dataset) / "medsight_plan.json")
    if network is not None:
        if network not in available_networks():
            raise ConfigError(f"unknown network {network!r}; available: {', '.join(available_networks())}. If it "
                              "comes from a plug-in, install the package that registers it")
        p = replace(p, configurations={k: replace(c, network=network) for k, c in p.configurations.items()})
    package_dir = model_dir or Path(dataset) / "medsight_models" / config
    previous = load_package(package_dir, allow_retired=True) if (package_dir / "manifest.json").is_file() else None
    model_dir = training_dir(package_dir)  # resumable state; the package is written from it at the end
    site_list = tuple(s.strip() for s in sites.split(",")) if sites else None
    folds = dataset_folds(ds, 5, seed, sites=site_list)
    if dd.is_main():
        model_dir.mkdir(parents=True, exist_ok=True)
        p.save(model_dir / "plan.json")
        shutil.copyfile(Path(dataset) / "dataset.json", model_dir / "dataset.json")
        save_folds(folds, model_dir / "splits.json")
    dd.barrier()
    if fold == "all":
        todo = [("all", sorted(folds[0]["train"] + folds[0]["val"]), [])]
    elif fold == "cv":
        todo = [(k, f["train"], f["val"]) for k, f in enumerate(folds)]
    elif fold.isdigit() and int(fold) < len(folds):
        k = int(fold)
        todo = [(k, folds[k]["train"], folds[k]["val"])]
    else:
        raise ConfigError(f"--fold must be 0-{len(folds) - 1}, 'all' or 'cv', got '{fold}'")
    with EnergyMeter() as meter:
        for k, tr, va in todo:
            s = train_fold(ds, p, config, k, model_dir, tr, va, seed=seed, epochs=epochs,
                           max_seconds=None if max_minutes is None else max_minutes * 60, quiet=quiet, init=init)
            if dd.is_main():
                click.echo(f"fold {k}: {s['epochs_done']}/{s['epochs_planned']} epochs, loss {s['final_loss']:.4f}, "
                           f"val Dice {s['final_val_dice']}")
    if dd.is_main():
        pkg = package_segmentation(model_dir, package_dir, name=name or f"{Path(dataset).resolve().name}-{config}",
                                   energy=meter.record(), previous=previous)
        current_event().package(pkg).outputs([package_dir])
        click.echo(f"model package {pkg.label} (id {pkg.id[:12]}, {pkg.status}) written to {package_dir}; "
                   f"training state in {model_dir}")
    dd.shutdown()


def _forward(params: dict) -> list[str]:
    """The command line for the worker processes: the same options, less --nproc."""
    args = [str(params["dataset"])]
    for name, value in params.items():
        if name in ("dataset", "nproc") or value is None:
            continue
        flag = {"plan_path": "--plan"}.get(name, "--" + name.replace("_", "-"))
        args += [flag, str(value)]
    return args
