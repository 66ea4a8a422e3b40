"""``medsight train-mil`` and ``medsight predict-mil``: slide-level models on stored tile features."""

from __future__ import annotations

from pathlib import Path

import click

MODELS = ("abmil", "clam-sb", "mean", "max")


@click.command("train-mil")
@click.argument("labels_csv", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("features_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Model folder to write.")
@click.option("--model", "model_name", default="abmil", show_default=True,
              help=f"MIL model from the medsight.mil registry ({', '.join(MODELS)}).")
@click.option("--epochs", default=40, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--val-share", default=0.25, show_default=True, help="Share of patients held out for validation.")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--name", default=None, help="Register the model package under this name (default: the folder name).")
def train_mil_cmd(labels_csv: Path, features_dir: Path, out_dir: Path, model_name: str, epochs: int, seed: int,
                  val_share: float, lr: float, name: str | None) -> None:
    """Train a slide classifier from LABELS_CSV (slide_id,label[,patient_id]) and FEATURES_DIR/<slide_id>/.

    Patients are split between training and validation (never both); validation picks the epoch, calibrates
    the probability (temperature) and sets the referral threshold.
    """
    from medsight.pathology.mil_train import train_mil
    from medsight.pathology.packaging import package_model

    config = train_mil(labels_csv, features_dir, out_dir, model_name, epochs, seed, val_share, lr)
    where = package_model(out_dir, name or out_dir.name)
    v = config["validation"]
    click.echo(f"{model_name}: validation AUC {v['auc']:.3f} (best epoch {config['best_epoch']}), "
               f"ECE {v.get('ece_before', float('nan')):.3f} -> {v.get('ece_after', float('nan')):.3f}; {where}")


@click.command("predict-mil")
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("features_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=8, show_default=True, help="Most-attended tiles saved per slide.")
@click.option("--no-evidence", is_flag=True, help="Only predictions (no heatmaps, tiles or GeoJSON).")
@click.pass_context
def predict_mil_cmd(ctx: click.Context, model_dir: Path, features_dir: Path, out_dir: Path, top_k: int,
                    no_evidence: bool) -> None:
    """Predict every slide with features under FEATURES_DIR: OUT/predictions.csv/json and per-slide evidence
    (heatmap.png, top_tiles/, attention.geojson for QuPath)."""
    from medsight.pathology.mil_predict import predict_slides

    rows = predict_slides(model_dir, features_dir, out_dir, not no_evidence, top_k,
                          progress=not (ctx.obj or {}).get("quiet"))
    for r in rows:
        p = r["probability"]
        click.echo(f"{r['slide_id']}: p(tumour) {'-' if p is None else f'{p:.3f}'} {r['decision']}")
    click.echo(f"wrote {out_dir / 'predictions.csv'}")
