"""``medsight train-cls`` and ``medsight predict-cls``: thin wrappers over medsight.classification."""

from __future__ import annotations

import json
from pathlib import Path

import click

from medsight.cli.audited import audited, current_event
from medsight.errors import ConfigError


def _size(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        size = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError as err:
        raise ConfigError(f"--input-size takes integers like 96,96 or 64,64,64, got {value!r}") from err
    if len(size) not in (2, 3) or min(size) < 8:
        raise ConfigError(f"--input-size needs 2 or 3 sizes of at least 8, got {value!r}")
    return size


@click.command("train-cls")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Model directory to write.")
@click.option("--label", "labels", multiple=True,
              help="Label column (repeatable). Default: every column other than image, patient_id, site, split...")
@click.option("--task", type=click.Choice(["binary", "multiclass", "multilabel"]),
              help="Default: binary for one 0/1 column, multilabel for several, multiclass for integer grades.")
@click.option("--backbone", default="resnet10", show_default=True,
              help="resnet10/18/34/50, densenet121/169, efficientnet-b0..b3, efficientnet-lite0, vit (MONAI).")
@click.option("--input-size", help="Network input size, e.g. 96,96 (2D) or 64,64,64 (3D).")
@click.option("--epochs", default=12, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=2e-3, show_default=True, help="Peak learning rate (one-cycle schedule).")
@click.option("--loss", type=click.Choice(["bce", "focal"]), default="bce", show_default=True,
              help="bce = cross-entropy (softmax for multiclass); focal down-weights easy cases.")
@click.option("--focal-gamma", default=2.0, show_default=True)
@click.option("--weighted-sampling", is_flag=True, help="Draw each class equally often (class imbalance).")
@click.option("--target-sensitivity", default=0.9, show_default=True,
              help="The stored decision threshold reaches this sensitivity on the validation patients.")
@click.option("--val-fraction", default=0.2, show_default=True,
              help="Share of patients held out for validation when the manifest has no split column.")
@click.option("--weights", type=click.Path(path_type=Path),
              help="Local checkpoint to start the backbone from (never downloaded).")
@click.option("--freeze", is_flag=True, help="Feature-extractor mode: train only the head on the frozen backbone.")
@click.option("--mask-weight", default=0.0, show_default=True,
              help="With a manifest mask column: weight of an auxiliary loss predicting the mask at the CAM layer.")
@click.option("--carvemix", default=0.0, show_default=True,
              help="With a mask column: share of negative images given another image's outlined finding.")
@click.option("--time-budget", type=float, help="Stop after the epoch that passes this many seconds.")
@click.option("--seed", default=0, show_default=True)
@click.option("--name", default=None, help="Registry name of the model package (default: the --out folder's name).")
@click.option("--init", "init", default=None, help="Start from this encoder package (`medsight pretrain --backbone`): "
              "verified, must fit the backbone; its id is recorded in the model's config, manifest and card.")
@click.option("--validation-target", type=float, default=None,
              help="Mean validation AUC the model must reach; a model below it is marked 'below target' in its "
              "package and card and is not registered as a serving candidate (unless --force).")
@click.option("--force", is_flag=True, help="Register the package even when it is below its validation target.")
@click.pass_context
@audited("train-cls", inputs=("manifest",), outputs=("out_dir",))
def train_cls(ctx: click.Context, manifest: Path, out_dir: Path, labels: tuple[str, ...], task: str | None,
              backbone: str, input_size: str | None, epochs: int, batch_size: int, lr: float, loss: str,
              focal_gamma: float, weighted_sampling: bool, target_sensitivity: float, val_fraction: float,
              weights: Path | None, freeze: bool, mask_weight: float, carvemix: float, time_budget: float | None,
              seed: int, name: str | None, init: str | None, validation_target: float | None,
              force: bool) -> None:
    """Train an image classifier from MANIFEST.csv (columns image, patient_id, site, label columns[, split]).

    The whole manifest is checked first (missing files, label values, a patient in two splits); the split is
    by patient, and the decision threshold per label is chosen on the validation patients for
    --target-sensitivity. --out becomes a verified, registered model package (replaced as a unit).
    """
    import shutil
    import tempfile

    from medsight.classification.package import package_classifier
    from medsight.classification.train import TrainConfig, train_classifier
    from medsight.engine.energy import EnergyMeter
    from medsight.files import sweep_stale, temp_prefix
    from medsight.package.package import check_target

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    cfg = TrainConfig(backbone=backbone, input_size=_size(input_size), epochs=epochs, batch_size=batch_size, lr=lr,
                      loss=loss, focal_gamma=focal_gamma, weighted_sampling=weighted_sampling,
                      target_sensitivity=target_sensitivity, val_fraction=val_fraction, seed=seed,
                      weights=str(weights) if weights else None, mode="frozen" if freeze else "finetune",
                      time_budget_s=time_budget, labels=list(labels) or None, task=task, mask_weight=mask_weight,
                      carvemix=carvemix, init=init, validation_target=validation_target)
    check_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir)  # a killed run's training folder and package staging beside --out
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir, "train-"), dir=out_dir.parent))
    try:
        with EnergyMeter() as meter:
            result = train_classifier(manifest, work / "model", cfg, quiet=quiet)
        pkg = package_classifier(work / "model", out_dir, name=name or out_dir.resolve().name, energy=meter.record(),
                                 force=force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    current_event().package(pkg)
    result.update(model_dir=str(out_dir), package={"name": pkg.name, "version": pkg.version, "id": pkg.id,
                                                   "status": pkg.status})
    click.echo(json.dumps(result, indent=2))
    if pkg.extra.get("below_target"):
        click.secho(f"BELOW TARGET: {pkg.extra['below_target']}; "
                    + ("registered anyway (--force)" if pkg.version is not None else
                       "the package was written but not registered as a serving candidate (--force registers it)"),
                    fg="red", err=True)


@click.command("predict-cls")
@click.argument("model_dir", metavar="MODEL")
@click.argument("inputs", nargs=-1, required=True)
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--evidence", is_flag=True, help="Also write display-size evidence figures (image, heatmap with colour "
              "bar, outline, caption with probability, decision and referral) into the heatmap folder.")
@click.option("--heatmaps", type=click.Path(path_type=Path),
              help="Folder for Grad-CAM PNG overlays and arrays. Default: OUTPUT's name + _gradcam.")
@click.option("--no-gradcam", is_flag=True, help="Probabilities and decisions only.")
@click.option("--allow-retired", is_flag=True, help="Use the model even if the registry marks it retired.")
@click.pass_context
@audited("predict-cls", inputs=("inputs",), outputs=("output", "heatmaps"))
def predict_cls(ctx: click.Context, model_dir: str, inputs: tuple[str, ...], output: Path,
                heatmaps: Path | None, no_gradcam: bool, allow_retired: bool, evidence: bool) -> None:
    """Classify INPUTS (image files, folders, or a CSV with an image column) with MODEL; write OUTPUT.csv.

    MODEL is a classifier package folder or a registered NAME[@VERSION]; every file hash is verified first, and
    only files its manifest lists (calibration, referral rule) are used.

    Per image: the probability of each label, the decision at the stored threshold, and a Grad-CAM heatmap as
    a PNG overlay and as an array on the image grid (.npy for 2D, NIfTI aligned to the image for 3D).
    """
    from medsight.classification.model_io import load_classifier
    from medsight.classification.predict import default_heatmap_dir, predict_images
    from medsight.package.package import load_package

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    pkg = load_package(model_dir, allow_retired=allow_retired)
    bundle = load_classifier(pkg)
    current_event().package(pkg)
    assessor = None
    if pkg.has("referral.json"):
        from medsight.safety.assess import SafetyAssessor

        assessor = SafetyAssessor.from_model_dir(pkg, bundle.config.get("activation"))
    heatmaps = heatmaps or default_heatmap_dir(output)
    table = predict_images(bundle, inputs, output, heatmaps, gradcam=not no_gradcam, quiet=quiet, assessor=assessor,
                           evidence=evidence)
    if not no_gradcam:
        current_event().outputs([heatmaps])
    click.echo(f"{len(table)} image(s) classified -> {output}")
