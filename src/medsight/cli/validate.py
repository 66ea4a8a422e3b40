"""``medsight validate``: external multi-site validation report (one self-contained HTML page + JSON)."""

from __future__ import annotations

from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command("validate")
@click.argument("model_dir", metavar="MODEL")
@click.argument("dataset", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--external-site", "external_sites", multiple=True,
              help="Manifest site held out as external validation; repeat for several sites.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False), default=Path("report.html"),
              show_default=True, help="HTML report to write; the JSON with the same numbers goes beside it.")
@click.option("--predictions", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Classifier per-case predictions CSV (case_id,y_true,prob[,prob_uncalibrated,referred,image,"
                   "mask]) instead of running a segmentation model; with image (and mask) columns the worst cases "
                   "show the image with MODEL_DIR's Grad-CAM map (and the finding's outline).")
@click.option("--threshold", type=float, default=None,
              help="Classifier operating threshold; default: the one MODEL_DIR stores (scan_level.json for "
                   "--unit scan, else thresholds.json / config.json), with its target and validation result.")
@click.option("--unit", type=click.Choice(["case", "slice", "scan", "patient"]), default="case", show_default=True,
              help="What one row of --predictions counts; every classification number is at this unit.")
@click.option("--min-cases", type=int, default=10, show_default=True,
              help="Subgroups smaller than this are shown as 'too few cases' instead of a number.")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples for the CIs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--allow-retired", is_flag=True, help="Validate a model the registry marks retired.")
@click.option("--write-card", is_flag=True,
              help="Also write the generated model card into a NEW package version (parent recorded); the "
                   "validated version itself is never modified.")
@audited("validate", inputs=("dataset", "predictions"), outputs=("report_path",))
def validate(model_dir: str, dataset: Path, external_sites: tuple[str, ...], report_path: Path,
             predictions: Path | None, threshold: float | None, unit: str, min_cases: int, n_boot: int, seed: int,
             quiet: bool, allow_retired: bool, write_card: bool) -> None:
    """Run MODEL_DIR on the internal cohort of DATASET and on each --external-site, and write the report.

    The internal cohort is the test set in no fold when the model's splits.json lists one (manifest split=test),
    else the folds' validation cases, each scored out of fold (the report says they chose the checkpoint).

    The report holds metrics with bootstrap 95% CIs per cohort and per subgroup (site, scanner, sex, age band),
    calibration, decision curves (classifiers), Dice distributions (segmentation), the worst cases with images,
    the model card (generated, written beside the report as <report>_model_card.md; MODEL is never modified)
    and the hashes/versions of model and data,
    mapped to CLAIM / TRIPOD+AI items.
    """
    from medsight.files import read_csv
    from medsight.report import assemble, run_model
    from medsight.package.package import load_package
    from medsight.report.cards import card_for
    from medsight.report.federated import federated_view_of
    from medsight.report.html import write_report

    pkg = load_package(model_dir, allow_retired=allow_retired)  # MODEL: package folder or NAME[@VERSION], verified
    current_event().package(pkg)
    model_dir = pkg.path
    if predictions is not None:
        op = None if threshold is not None else assemble.operating_point(model_dir, unit)
        res = assemble.classification_results(
            read_csv(predictions, "predictions CSV", dtype={"case_id": str}), dataset,
            assemble.model_provenance(model_dir, model_dir.name, "classification"), external_sites,
            min_cases=min_cases, n_boot=n_boot, seed=seed, threshold=threshold, classifier_dir=model_dir,
            base=predictions.parent, unit=unit, op=op)
        res.data["partitioning"] = assemble.prediction_partitioning(
            read_csv(predictions, "predictions CSV", dtype=str), pkg)
    elif run_model.is_segmentation_model(model_dir):
        pred_dir = report_path.parent / f"{report_path.stem}_predictions"
        cohort = run_model.internal_cohort(model_dir, run_model.case_ids_of(dataset)) \
            if (model_dir / "splits.json").is_file() else None
        table = run_model.segmentation_table(model_dir, dataset, external_sites, pred_dir, quiet=quiet, cohort=cohort)
        res = assemble.segmentation_results(
            table, dataset, run_model.labels_of(dataset),
            assemble.model_provenance(model_dir, model_dir.name, "segmentation"), external_sites,
            min_cases=min_cases, n_boot=n_boot, seed=seed, pred_dir=pred_dir,
            **({"internal": cohort.name} if cohort else {}))
        if cohort:
            res.notes.append(cohort.note)
        res.notes.append(run_model.scoring_note(table, external_sites, cohort.case_ids if cohort and
                                                cohort.in_no_fold else ()))
        res.data["partitioning"] = run_model.fold_partitioning(model_dir, dataset)
        res.data["scoring"] = table.drop_duplicates("case_id").set_index("case_id")["scored_by"].to_dict()
    else:
        from medsight.errors import ConfigError

        raise ConfigError(f"{model_dir} has no plan.json (segmentation model); for a classifier pass its per-case "
                          "predictions with --predictions CSV")
    task = "classification" if predictions is not None else "segmentation"
    card_path = report_path.with_name(f"{report_path.stem}_model_card.md")
    res.model_card = card_for(res.to_dict(), task, model_dir, model_dir.name, dataset, None, res.worst_cases,
                              res.model.get("hashes"), card_path=card_path)
    res.model_cards = [res.model_card]
    res.federated = federated_view_of(pkg)  # None unless the package records a federation
    html, js = write_report(res, report_path)
    current_event().outputs([js, card_path])
    click.echo(f"report: {html}\nresults: {js}\nmodel card: {card_path}")
    if write_card:
        from medsight.report.cards import write_card_version

        new = write_card_version(model_dir, card_path)
        current_event().package(new).note(card_version=new.label)
        click.echo(f"model card stored in new version {new.label} at {new.path} (parent {pkg.label})")
