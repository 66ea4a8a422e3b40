"""``medsight train-mil`` and ``medsight predict-mil``: slide-level models on stored tile features."""

from __future__ import annotations

from pathlib import Path

import click

from medsight.cli.audited import audited, current_event

MODELS = ("abmil", "clam-sb", "mean", "max")


@click.command("train-mil")
@click.argument("labels_csv", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("features_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Model package folder to write (what predict-mil reads).")
@click.option("--model", "model_name", default="abmil", show_default=True,
              help=f"MIL model from the medsight.mil registry ({', '.join(MODELS)}).")
@click.option("--epochs", default=40, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--val-share", default=0.25, show_default=True, help="Share of patients held out for validation.")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--name", default=None, help="Register the model package under this name (default: the folder name).")
@click.option("--init", "init", default=None, help="Encoder package (`medsight pretrain`) the features must come from "
              "(`wsi features --encoder pretrained --weights PACKAGE`): verified, its width checked, its id recorded "
              "in the model package and card.")
@audited("train-mil", inputs=("labels_csv",), outputs=("out_dir",))
def train_mil_cmd(labels_csv: Path, features_dir: Path, out_dir: Path, model_name: str, epochs: int, seed: int,
                  val_share: float, lr: float, name: str | None, init: str | None) -> None:
    """Train a slide classifier from LABELS_CSV (slide_id,label[,patient_id]) and FEATURES_DIR/<slide_id>/.

    Patients are split between training and validation (never both); validation picks the epoch, calibrates
    the probability (temperature) and sets the referral threshold.
    """
    from medsight.pathology.packaging import train_mil_package

    config, pkg = train_mil_package(labels_csv, features_dir, out_dir, model_name, name or out_dir.name,
                                    epochs=epochs, seed=seed, val_share=val_share, lr=lr, init=init)
    current_event().package(pkg).note(model=model_name, package=pkg.label)
    v = config["validation"]
    click.echo(f"{model_name}: validation AUC {v['auc']:.3f} (best epoch {config['best_epoch']}), "
               f"ECE {v.get('ece_before', float('nan')):.3f} -> {v.get('ece_after', float('nan')):.3f}; "
               f"model package {pkg.label} (id {pkg.id[:12]}) at {pkg.path}")


@click.command("predict-mil")
@click.argument("model", metavar="MODEL")
@click.argument("features_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=8, show_default=True, help="Most-attended tiles saved per slide.")
@click.option("--no-evidence", is_flag=True, help="Only predictions (no heatmaps, tiles or GeoJSON).")
@click.option("--allow-retired", is_flag=True, help="Use a model the registry marks retired.")
@click.pass_context
@audited("predict-mil", inputs=("features_dir",), outputs=("out_dir",))
def predict_mil_cmd(ctx: click.Context, model: str, features_dir: Path, out_dir: Path, top_k: int,
                    no_evidence: bool, allow_retired: bool) -> None:
    """Predict every slide with features under FEATURES_DIR with MODEL (a MIL package folder or registered
    NAME[@VERSION], verified): OUT/predictions.csv/json and per-slide evidence (heatmap.png, top_tiles/,
    attention.geojson for QuPath)."""
    from medsight.pathology.mil_predict import predict_slides
    from medsight.pathology.packaging import mil_package

    pkg = mil_package(model, allow_retired=allow_retired)
    current_event().package(pkg)
    rows = predict_slides(pkg, features_dir, out_dir, not no_evidence, top_k,
                          progress=not (ctx.obj or {}).get("quiet"))
    for r in rows:
        p = r["probability"]
        click.echo(f"{r['slide_id']}: p(tumour) {'-' if p is None else f'{p:.3f}'} {r['decision']}")
    click.echo(f"wrote {out_dir / 'predictions.csv'}")
