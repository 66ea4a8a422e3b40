"""``medsight evaluate seg --lesions``: lesion-wise metrics beside the voxel metrics.

Kept apart from cli/evaluate.py as a decorator that adds the options and runs after the voxel evaluation, so the
two evolve without touching each other's lines. Definitions: docs/metrics.md "Lesion-wise".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def lesion_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--lesions``, ``--lesion-labels`` and ``--lesion-iou`` to ``evaluate seg``."""

    @functools.wraps(command)
    def wrapped(ctx: click.Context, *args: Any, lesions: bool, lesion_labels: str | None, lesion_iou: float,
                **kwargs: Any) -> Any:
        result = command(ctx, *args, **kwargs)
        if lesions:
            run_lesions(ctx, kwargs, lesion_labels, lesion_iou)
        return result

    for opt in reversed((
        click.option("--lesions", is_flag=True,
                     help="Also lesion-wise metrics: matched components, TP/FP/FN, F1, panoptic quality, FROC, "
                          "per-lesion Dice (lesion_matches.csv, lesions_per_case.csv, lesion_summary.json, froc.csv)."),
        click.option("--lesion-labels", default=None,
                     help="Labels to treat as lesions, as '3=lesion'. Default: labels named lesion/tumour/nodule/"
                          "metastasis, else every label."),
        click.option("--lesion-iou", default=0.1, show_default=True, type=float,
                     help="A predicted and a reference lesion match when their IoU exceeds this."),
    )):
        wrapped = opt(wrapped)
    return wrapped


def run_lesions(ctx: click.Context, opts: dict[str, Any], lesion_labels: str | None, iou: float) -> None:
    import pandas as pd

    from medsight.cli.evaluate import _quiet, _seg_labels, _stamp, _versions
    from medsight.metrics import lesions as lm
    from medsight.metrics import tables

    pred_dir, ref_dir = Path(opts["pred_dir"]), Path(opts["ref_dir"])
    labels = tables.parse_labels(lesion_labels) if lesion_labels else lm.lesion_label(
        _seg_labels(opts.get("labels_text"), ref_dir))
    patients = None
    if opts.get("manifest") is not None:
        man = tables.read_predictions(Path(opts["manifest"]))
        if "patient_id" in man.columns and "case_id" in man.columns:
            patients = dict(zip(man["case_id"].astype(str), man["patient_id"].astype(str)))
    quiet = _quiet(ctx)
    matched = lm.evaluate_lesion_folders(pred_dir, ref_dir, labels, patients, iou, quiet=quiet)
    out = opts.get("out_dir") or pred_dir.resolve().parent / "evaluation"
    rows, per_case, froc_rows, summaries = [], [], [], {}
    for value, cases in matched.items():
        name = labels[value]
        rows += lm.lesion_rows(cases, name)
        per_case += [{"label": name, **c.counts()} for c in cases]
        s = lm.summarise_lesions(cases, n_boot=opts["n_boot"], alpha=opts["alpha"], seed=opts["seed"])
        froc_rows += [{"label": name, **p} for p in s["froc"]["points"]]
        summaries[name] = s
    tables.write_csv(out / "lesion_matches.csv", pd.DataFrame(rows, columns=list(LESION_COLUMNS)))
    tables.write_csv(out / "lesions_per_case.csv", pd.DataFrame(per_case))
    tables.write_csv(out / "froc.csv", pd.DataFrame(froc_rows, columns=["label", "threshold", "fp_per_case",
                                                                         "sensitivity"]))
    tables.write_json(out / "lesion_summary.json", {
        "kind": "segmentation_lesions", "created": _stamp(), "pred_dir": str(pred_dir), "ref_dir": str(ref_dir),
        "matching": {"connectivity": "full (26 in 3D)", "rule": f"IoU > {iou:g}, one-to-one, largest total IoU"},
        "patients_from": "manifest patient_id" if patients else "case_id (no manifest with patient_id)",
        "n_boot": opts["n_boot"], "alpha": opts["alpha"], "seed": opts["seed"], "definitions": "docs/metrics.md",
        "versions": _versions(), "labels": summaries})
    if not quiet:
        for name, s in summaries.items():
            m = s["metrics"]
            click.echo(f"lesions ({name}): {s['n_ref_lesions']} reference, {s['n_pred_lesions']} predicted; "
                       f"sensitivity {m['sensitivity']['value']:.3f}, FP/case {m['fp_per_case']['value']:.2f}, "
                       f"F1 {m['f1']['value']:.3f}, PQ {m['pq']['value']:.3f}, "
                       f"lesion Dice {m['lesion_dice']['value']:.3f}")


LESION_COLUMNS = ("case_id", "patient_id", "label", "source", "lesion_id", "volume_ml", "matched_id", "iou", "dice",
                  "score")
