"""``medsight follow-up PRIOR CURRENT -o OUT``: how each lesion changed between two studies of one patient."""

from __future__ import annotations

from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command("follow-up")
@click.argument("prior", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output folder: lesion_changes.csv, followup.json, evidence.png, registration/, SEG + SR per study.")
@click.option("--model", "model", default=None, help="Segmentation model package (folder or NAME[@VERSION]) that "
              "finds the lesions in both studies; verified before use.")
@click.option("--prior-labels", type=click.Path(path_type=Path), default=None,
              help="Lesion label map of PRIOR (instead of --model), on PRIOR's grid.")
@click.option("--current-labels", type=click.Path(path_type=Path), default=None,
              help="Lesion label map of CURRENT (instead of --model), on CURRENT's grid.")
@click.option("--lesion-value", type=int, default=None, help="Label value of lesions (default: the model's lesion "
              "labels; for given label maps, every non-zero voxel).")
@click.option("--mode", type=click.Choice(["rigid", "affine", "deformable"]), default="affine", show_default=True,
              help="Registration of prior onto current (affine suits one head over time; sizes are always measured "
                   "in each study's own grid).")
@click.option("--force", is_flag=True, help="Run even when the DICOM PatientIDs differ.")
@audited("follow-up", inputs=("prior", "current", "prior_labels", "current_labels"), outputs=("output",))
def follow_up(prior: Path, current: Path, output: Path, model: str | None, prior_labels: Path | None,
              current_labels: Path | None, lesion_value: int | None, mode: str, force: bool) -> None:
    """Register PRIOR onto CURRENT (NIfTI or DICOM series), match lesions and classify each as new, resolved,
    stable, growing or shrinking (rule in docs/registration.md and followup.json)."""
    import numpy as np

    from medsight.errors import ConfigError
    from medsight.io import read_image
    from medsight.io.dicom_out import Algorithm
    from medsight.registration.followup_run import follow_up as run

    if (model is None) == (prior_labels is None or current_labels is None) or \
            (model is not None and (prior_labels or current_labels)):
        raise ConfigError("give either --model, or both --prior-labels and --current-labels")
    images = {"prior": read_image(prior), "current": read_image(current)}
    masks = {}
    algorithm = None
    if model is not None:
        from medsight.package.package import load_package
        from medsight.segmentation.predict import Predictor

        pkg = load_package(model)
        if pkg.task != "segmentation":
            raise ConfigError(f"package {pkg.label} is a {pkg.task} model; follow-up needs a segmentation model")
        current_event().package(pkg)
        predictor = Predictor(pkg.path)
        values = [lesion_value] if lesion_value is not None else \
            [int(k) for k in (predictor.plan.postprocess.get("lesion_labels") or {})] or \
            [v for k, v in predictor.plan.labels.items() if "lesion" in k.lower()]
        if not values:
            raise ConfigError(f"package {pkg.label} names no lesion label; pass --lesion-value")
        for when, img in images.items():
            masks[when] = np.isin(np.asarray(predictor.predict(img).labels.array), values)
        algorithm = Algorithm(pkg.label[:64], pkg.id)
    else:
        for when, path in (("prior", prior_labels), ("current", current_labels)):
            lab = read_image(path)
            img = images[when]
            if lab.shape != img.shape or not np.allclose(lab.geometry.affine, img.geometry.affine, atol=1e-3):
                raise ConfigError(f"the {when} label map is not on the {when} image's grid (shape or geometry "
                                  "differ); give the label map segmented from that image", path)
            arr = np.asarray(lab.array)
            masks[when] = arr == lesion_value if lesion_value is not None else arr != 0
    result = run(images["prior"], masks["prior"], images["current"], masks["current"], output, prior_path=prior,
                 current_path=current, mode=mode, force=force, algorithm=algorithm)
    s = result.summary
    current_event().note(mode=mode, status_counts=s["status_counts"], n_tracks=s["n_tracks"])
    counts = ", ".join(f"{v} {k}" for k, v in s["status_counts"].items())
    click.echo(f"{s['n_tracks']} lesion track(s): {counts}; written to {output}")
