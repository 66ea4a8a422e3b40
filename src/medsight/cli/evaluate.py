"""``medsight evaluate``: segmentation metrics over NIfTI folders and classification metrics over a predictions CSV.

Thin: parse options, call ``medsight.metrics.tables``, write per-case and summary tables (CSV and JSON), print a
short summary. Definitions of every metric are in docs/metrics.md.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from medsight.cli.audited import audited
from medsight.cli.evaluate_lesions import lesion_options
from medsight.files import atomic_dir

# the files one evaluation writes; an earlier run's copies are replaced as a set, anything else in --out is kept
TABLES = ("per_case.csv", "summary.csv", "subgroups.csv", "summary.json")


def _quiet(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("quiet"))


def _versions() -> dict[str, str]:
    """Versions of the libraries the metrics rest on (read from package metadata: no heavy imports)."""
    from medsight.package.manifest import library_versions

    return library_versions(("medsight", "numpy", "scipy", "scikit-learn", "pandas", "monai"))


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@click.group()
def evaluate() -> None:
    """Compute metrics with confidence intervals and write per-case and summary tables.

    \b
    medsight evaluate seg PRED_DIR REF_DIR      NIfTI label maps matched by case id (file name)
    medsight evaluate cls PREDICTIONS.csv       labels and scores, one row per case
    """


@evaluate.command("seg")
@click.argument("pred_dir", type=click.Path(path_type=Path))
@click.argument("ref_dir", type=click.Path(path_type=Path))
@click.option("--labels", "labels_text", default=None,
              help="Foreground labels as '1=liver,2=tumour'. Default: dataset.json beside or above REF_DIR, "
                   "else every value found in the references.")
@click.option("--nsd-tolerance", "tol", default=1.0, show_default=True, type=float,
              help="Normalised surface Dice tolerance in mm.")
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="Case table with case_id and subgroup columns (e.g. the dataset's manifest.csv) for --group-by.")
@click.option("--group-by", "group_by", multiple=True,
              help="Manifest column to report Dice and NSD by (site, scanner, sex, age...); repeatable.")
@click.option("--min-cases", default=20, show_default=True, help="Smaller subgroups are marked too_few.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: PRED_DIR/../evaluation).")
@click.option("--n-boot", default=1000, show_default=True, help="Bootstrap resamples for the summary CIs.")
@click.option("--alpha", default=0.05, show_default=True, help="1 - confidence level of the intervals.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.pass_context
@audited("evaluate.seg", inputs=("pred_dir", "ref_dir", "manifest"), outputs=("out_dir",))
@lesion_options
def seg(ctx: click.Context, pred_dir: Path, ref_dir: Path, labels_text: str | None, tol: float,
        manifest: Path | None, group_by: tuple[str, ...], min_cases: int, out_dir: Path | None, n_boot: int,
        alpha: float, seed: int) -> None:
    """Dice, IoU, sensitivity, precision, volumes, HD, HD95, ASSD and NSD per case and label.

    Writes per_case.csv, summary.csv (mean with bootstrap CI, median, std per label and metric) and summary.json
    (the same plus settings, definitions and versions); with --manifest and --group-by also subgroups.csv.
    Prediction and reference must share shape and spacing.
    """
    from medsight.errors import MetricError
    from medsight.metrics import tables

    if group_by and manifest is None:
        raise MetricError("--group-by needs --manifest (a CSV with case_id and the subgroup columns)")

    labels = _seg_labels(labels_text, ref_dir)
    case_table = tables.read_predictions(manifest) if group_by and manifest is not None else None
    per_case = tables.evaluate_segmentation_folders(pred_dir, ref_dir, labels, tol, quiet=_quiet(ctx))
    summary = tables.summarise_segmentation(per_case, n_boot=n_boot, alpha=alpha, seed=seed)
    subgroups = None
    if case_table is not None:
        subgroups = tables.segmentation_subgroups(per_case, case_table, group_by,
                                                  min_cases=min_cases, n_boot=n_boot, alpha=alpha, seed=seed,
                                                  path=manifest)
    record = {
        "kind": "segmentation", "created": _stamp(), "pred_dir": str(pred_dir), "ref_dir": str(ref_dir),
        "labels": {str(k): v for k, v in labels.items()}, "nsd_tolerance_mm": tol, "n_boot": n_boot,
        "alpha": alpha, "seed": seed, "n_cases": int(per_case["case_id"].nunique()),
        "definitions": "docs/metrics.md (surface distances identical to MONAI with spacing; empty-mask conventions)",
        "versions": _versions(), "summary": summary.to_dict(orient="records"),
        "subgroups": [] if subgroups is None else subgroups.to_dict(orient="records"),
        "cases": per_case.to_dict(orient="records"),
    }
    out = out_dir or Path(pred_dir).resolve().parent / "evaluation"
    with atomic_dir(out, replaces=TABLES) as tmp:  # the tables are one set: old or new, never a mix
        tables.write_csv(tmp / "per_case.csv", per_case)
        tables.write_csv(tmp / "summary.csv", summary)
        if subgroups is not None:
            tables.write_csv(tmp / "subgroups.csv", subgroups)
        tables.write_json(tmp / "summary.json", record)
    _print_seg(summary, out, _quiet(ctx))


def _operating_thresholds(tasks: list[str], threshold: float | None, model: str | None) -> dict[str, float]:
    """Each task's threshold: --threshold for all, or the one the package stores (chosen on its validation data).
    Never derived from the predictions being evaluated."""
    from medsight.errors import ConfigError

    if (threshold is None) == (model is None):
        raise ConfigError("give the operating threshold: --threshold T, or --model PACKAGE to use the threshold the "
                          "package stores (a threshold picked on the test predictions would be optimistic)")
    if threshold is not None:
        return dict.fromkeys(tasks, float(threshold))
    from medsight.cli.audited import current_event
    from medsight.package.package import load_package

    pkg = load_package(model)
    current_event().package(pkg)
    stored = (pkg.read_json("config.json").get("thresholds") or {}) if pkg.has("config.json") else {}
    if len(stored) == 1 and len(tasks) == 1:
        return {tasks[0]: float(next(iter(stored.values())))}
    missing = [t for t in tasks if t not in stored]
    if missing:
        raise ConfigError(f"package {pkg.label} stores no threshold for task(s) {', '.join(missing)} (it has: "
                          f"{', '.join(stored) or 'none'}); pass --threshold or fit one with `medsight calibrate`")
    return {t: float(stored[t]) for t in tasks}


def _seg_labels(labels_text: str | None, ref_dir: Path) -> dict[int, str]:
    from medsight.metrics import tables

    if labels_text:
        return tables.parse_labels(labels_text)
    for candidate in (Path(ref_dir) / "dataset.json", Path(ref_dir).parent / "dataset.json"):
        if candidate.is_file():
            return tables.labels_from_dataset_json(candidate)
    import numpy as np

    from medsight.io.nifti import read_nifti

    values: set[int] = set()
    for path in tables.nifti_files(Path(ref_dir)).values():
        values |= {int(v) for v in np.unique(read_nifti(path).array)}
    values.discard(0)
    if not values:
        from medsight.errors import MetricError

        raise MetricError("every reference is empty and no labels were given; pass --labels 1=name", ref_dir)
    return {v: f"label_{v}" for v in sorted(values)}


def _print_seg(summary: Any, out: Path, quiet: bool) -> None:
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="segmentation: mean [95% bootstrap CI] over the cases whose reference holds the label "
                        "(medians in summary.csv)")
    for col in ("label", "n", "dice", "hd95 mm", "assd mm", "nsd", "empty ref: n, FP rate"):
        table.add_column(col)
    for name, grp in summary.groupby("name", sort=False):
        cells = []
        for metric in ("dice", "hd95", "assd", "nsd"):
            r = grp[grp["metric"] == metric].iloc[0]
            extra = f" ({r['n_not_finite']} inf)" if r["n_not_finite"] else ""
            cells.append(f"{r['mean']:.3f} [{r['lo']:.3f}-{r['hi']:.3f}]{extra}")
        fp = grp[grp["metric"] == "fp_rate"]
        empty = f"{int(fp.iloc[0]['n'])}, {fp.iloc[0]['mean']:.3f}" if len(fp) else "0"
        table.add_row(str(name), str(int(grp[grp["metric"] == "dice"].iloc[0]["n"])), *cells, empty)
    console = Console()
    console.print(table)
    console.print(f"tables written to {out}")


@evaluate.command("cls")
@click.argument("predictions", type=click.Path(path_type=Path))
@click.option("--threshold", default=None, type=float,
              help="Operating threshold for every task: score >= threshold is called positive. Give this or --model.")
@click.option("--model", "model", default=None, metavar="PACKAGE",
              help="Take each task's operating threshold from this classifier package (folder or NAME[@VERSION], "
                   "verified): the one chosen on its validation data, never on these predictions.")
@click.option("--target-sensitivity", default=None, type=float,
              help="Also report (descriptively) the threshold that reaches this sensitivity ON THESE PREDICTIONS: "
                   "optimistic, not an operating point.")
@click.option("--group-by", "group_by", multiple=True,
              help="Subgroup column (site, sex, scanner, age...); repeatable. 'age' is banded (0-39, 40-59...).")
@click.option("--kappa", "kappa_pairs", multiple=True, metavar="TRUE_COL:PRED_COL",
              help="Also report quadratic weighted kappa (with CI and confusion matrix) between two integer grade "
                   "columns, e.g. dr_grade:dr_grade_pred; repeatable.")
@click.option("--min-cases", default=20, show_default=True, help="Smaller subgroups are marked too_few.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: beside the CSV, <name>_evaluation).")
@click.option("--n-boot", default=1000, show_default=True, help="Bootstrap resamples (stratified by outcome).")
@click.option("--alpha", default=0.05, show_default=True, help="1 - confidence level of the intervals.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.pass_context
@audited("evaluate.cls", inputs=("predictions",), outputs=("out_dir",))
def cls(ctx: click.Context, predictions: Path, threshold: float | None, model: str | None,
        target_sensitivity: float | None,
        group_by: tuple[str, ...], kappa_pairs: tuple[str, ...], min_cases: int, out_dir: Path | None, n_boot: int, alpha: float,
        seed: int) -> None:
    """AUC (DeLong and bootstrap CIs), PR AUC, sensitivity/specificity/PPV/NPV/F1, calibration, subgroups.

    PREDICTIONS.csv holds one row per case: for each task a 0/1 column NAME and a score column NAME_score
    (or y_true and y_score), optionally case_id and subgroup columns. Writes per_case.csv, summary.csv,
    subgroups.csv (with --group-by) and summary.json.
    """
    import pandas as pd

    from medsight.errors import MetricError
    from medsight.metrics import classification as clsm
    from medsight.metrics import tables
    from medsight.metrics.subgroup import age_bands, metric_by_group

    df = tables.read_predictions(predictions)
    tasks = tables.classification_tasks(list(df.columns))
    thresholds = _operating_thresholds(list(tasks), threshold, model) if tasks else {}
    if not tasks and not kappa_pairs:
        raise MetricError("no task columns found: give NAME and NAME_score columns (or y_true and y_score)",
                          predictions)
    missing = [g for g in group_by if g not in df.columns]
    if missing:
        raise MetricError(f"no column(s) {missing} to group by; columns are {list(df.columns)}", predictions)
    out = out_dir or predictions.resolve().with_name(predictions.name.rsplit(".", 1)[0] + "_evaluation")
    per_case = pd.DataFrame({"case_id": tables.case_names(df)})
    summaries: dict[str, Any] = {}
    subgroup_parts = []
    for task, (truth, score) in tasks.items():
        y, s = tables.check_task_columns(df, truth, score, predictions)
        summaries[task] = tables.summarise_classification(y, s, thresholds[task], target_sensitivity, n_boot, alpha,
                                                          seed)
        summaries[task]["threshold_source"] = "--threshold" if model is None else f"package {model}"
        per_case[truth], per_case[score] = y, s
        per_case[f"{task}_called"] = (s >= thresholds[task]).astype(int)
        per_case[f"{task}_correct"] = (per_case[f"{task}_called"] == y).astype(int)
        for g in group_by:
            groups = age_bands(df[g]) if g == "age" else df[g].to_numpy()
            part = metric_by_group(clsm.roc_auc, groups, y, s, min_cases=min_cases, attribute=g, n_boot=n_boot,
                                   alpha=alpha, seed=seed, stratify_by=0)
            part.insert(0, "task", task)
            part.insert(3, "metric", "auc")
            subgroup_parts.append(part)
    for g in group_by:
        per_case[g] = df[g].to_numpy()
    kappas = {pair: tables.summarise_kappa(df, pair, predictions, n_boot, alpha, seed) for pair in kappa_pairs}
    summary_rows = [{"task": t, **{k: v for k, v in m.items() if not isinstance(v, dict)},
                     **{f"{blk}_{k}": v for blk in ("at_threshold", "at_target_sensitivity")
                        for k, v in m.get(blk, {}).items()}} for t, m in summaries.items()]
    subgroups = pd.concat(subgroup_parts, ignore_index=True) if subgroup_parts else None
    from medsight.files import sha256_file

    record = {
        "kind": "classification", "created": _stamp(), "predictions": str(predictions),
        "predictions_sha256": sha256_file(predictions), "thresholds": thresholds,
        "threshold_source": "--threshold" if model is None else f"package {model}",
        "target_sensitivity": target_sensitivity, "n_boot": n_boot, "alpha": alpha, "seed": seed,
        "definitions": "docs/metrics.md", "versions": _versions(), "tasks": summaries,
        "kappa": kappas, "subgroups": [] if subgroups is None else subgroups.to_dict(orient="records"),
    }
    with atomic_dir(out, replaces=TABLES) as tmp:  # the tables are one set: old or new, never a mix
        tables.write_csv(tmp / "per_case.csv", per_case)
        if summary_rows:
            tables.write_csv(tmp / "summary.csv", pd.DataFrame(summary_rows))
        if subgroups is not None:
            tables.write_csv(tmp / "subgroups.csv", subgroups)
        tables.write_json(tmp / "summary.json", record)
    if not _quiet(ctx):
        for task, m in summaries.items():
            auc = (f"AUC {m['auc']:.3f} [{m['auc_delong_lo']:.3f}, {m['auc_delong_hi']:.3f}]" if "auc" in m
                   else "AUC undefined (one class)")
            at = m.get("at_threshold", {})
            click.echo(f"{task}: n={m['n']} pos={m['n_pos']}  {auc}  sens {at.get('sensitivity', float('nan')):.3f}"
                       f"  spec {at.get('specificity', float('nan')):.3f} at {thresholds[task]:g}")
        for pair, k in kappas.items():
            click.echo(f"{pair}: quadratic weighted kappa {k['kappa']:.3f} [{k['lo']:.3f}, {k['hi']:.3f}]")
        click.echo(f"tables written to {out}")
