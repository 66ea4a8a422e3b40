"""``medsight validate``: external multi-site validation report (one self-contained HTML page + JSON)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("validate")
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("dataset", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--external-site", "external_sites", multiple=True,
              help="Manifest site held out as external validation; repeat for several sites.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False), default=Path("report.html"),
              show_default=True, help="HTML report to write; the JSON with the same numbers goes beside it.")
@click.option("--predictions", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Classifier per-case predictions CSV (case_id,y_true,prob[,prob_uncalibrated,referred,image,"
                   "mask]) instead of running a segmentation model; with image (and mask) columns the worst cases "
                   "show the image with MODEL_DIR's Grad-CAM map (and the finding's outline).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Classifier operating threshold.")
@click.option("--min-cases", type=int, default=10, show_default=True,
              help="Subgroups smaller than this are shown as 'too few cases' instead of a number.")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples for the CIs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def validate(model_dir: Path, dataset: Path, external_sites: tuple[str, ...], report_path: Path,
             predictions: Path | None, threshold: float, min_cases: int, n_boot: int, seed: int, quiet: bool) -> None:
    """Run MODEL_DIR on the internal test folds of DATASET and on each --external-site, and write the report.

    The report holds metrics with bootstrap 95% CIs per cohort and per subgroup (site, scanner, sex, age band),
    calibration, decision curves (classifiers), Dice distributions (segmentation), the worst cases with images,
    the model card and the hashes/versions of model and data, mapped to CLAIM / TRIPOD+AI items.
    """
    from medsight.files import read_csv
    from medsight.report import assemble, run_model
    from medsight.report.html import write_report

    card = assemble.model_card_of(model_dir)
    if predictions is not None:
        res = assemble.classification_results(
            read_csv(predictions, "predictions CSV", dtype={"case_id": str}), dataset,
            assemble.model_provenance(model_dir, model_dir.name, "classification"), external_sites,
            min_cases=min_cases, n_boot=n_boot, seed=seed, threshold=threshold, model_card=card,
            classifier_dir=model_dir, base=predictions.parent)
    elif run_model.is_segmentation_model(model_dir):
        pred_dir = report_path.parent / f"{report_path.stem}_predictions"
        table = run_model.segmentation_table(model_dir, dataset, external_sites, pred_dir, quiet=quiet)
        res = assemble.segmentation_results(
            table, dataset, run_model.labels_of(dataset),
            assemble.model_provenance(model_dir, model_dir.name, "segmentation"), external_sites,
            min_cases=min_cases, n_boot=n_boot, seed=seed, pred_dir=pred_dir, model_card=card)
    else:
        from medsight.errors import ConfigError

        raise ConfigError(f"{model_dir} has no plan.json (segmentation model); for a classifier pass its per-case "
                          "predictions with --predictions CSV")
    html, js = write_report(res, report_path)
    click.echo(f"report: {html}\nresults: {js}")
