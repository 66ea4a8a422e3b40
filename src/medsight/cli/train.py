"""``medsight train DATASET``: train a configuration of the plan on one fold or all (resumes if interrupted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--config", "config", type=click.Choice(["2d", "3d"]), default="3d", show_default=True)
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
@click.option("--name", default=None, help="Registry name of the model package (default: <dataset>-<config>).")
@click.pass_context
@audited("train", inputs=("dataset",))
def train(ctx: click.Context, dataset: Path, config: str, fold: str, plan_path: Path | None, model_dir: Path | None,
          epochs: int | None, seed: int, sites: str | None, max_minutes: float | None, name: str | None) -> None:
    """Train a segmentation network on DATASET with a patient-level 5-fold split.

    Writes a checkpoint after every epoch (atomically); run the same command again after a kill and it resumes,
    ending with the same weights as an uninterrupted run. Training state and TensorBoard logs live in
    MODEL_DIR.training/; MODEL_DIR itself is the verified, registered model package (every finished fold).
    """
    from medsight.data.dataset import load_dataset, validate
    from medsight.data.splits import dataset_folds, save_folds
    from medsight.errors import ConfigError
    from medsight.plan.plan import Plan
    from medsight.engine.energy import EnergyMeter
    from medsight.package.package import load_package
    from medsight.segmentation.package import package_segmentation, training_dir
    from medsight.segmentation.train import train_fold

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    ds = load_dataset(dataset)
    validate(ds)
    p = Plan.load(plan_path or Path(dataset) / "medsight_plan.json")
    package_dir = model_dir or Path(dataset) / "medsight_models" / config
    previous = load_package(package_dir, allow_retired=True) if (package_dir / "manifest.json").is_file() else None
    model_dir = training_dir(package_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    p.save(model_dir / "plan.json")
    shutil.copyfile(Path(dataset) / "dataset.json", model_dir / "dataset.json")
    site_list = tuple(s.strip() for s in sites.split(",")) if sites else None
    folds = dataset_folds(ds, 5, seed, sites=site_list)
    save_folds(folds, model_dir / "splits.json")
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
                           max_seconds=None if max_minutes is None else max_minutes * 60, quiet=quiet)
            click.echo(f"fold {k}: {s['epochs_done']}/{s['epochs_planned']} epochs, loss {s['final_loss']:.4f}, "
                       f"val Dice {s['final_val_dice']}")
    pkg = package_segmentation(model_dir, package_dir, name=name or f"{Path(dataset).resolve().name}-{config}",
                               energy=meter.record(), previous=previous)
    current_event().package(pkg).outputs([package_dir])
    click.echo(f"model package {pkg.label} (id {pkg.id[:12]}, {pkg.status}) written to {package_dir}; "
               f"training state in {model_dir}")
