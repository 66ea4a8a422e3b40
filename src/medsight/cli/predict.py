"""``medsight predict MODEL_DIR INPUT OUTPUT``: segment one image or a folder of images."""

from __future__ import annotations

import re
from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command()
@click.argument("model_dir", metavar="MODEL")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--evidence", is_flag=True, help="Also write a display-size evidence figure per case "
              "(<case>_evidence.png: three views through the largest lesion, outlines with lesion ids, volumes).")
@click.option("--folds", default=None, help="Comma-separated folds to ensemble (default: every trained fold).")
@click.option("--no-mirror", is_flag=True, help="Skip mirroring test-time augmentation (faster).")
@click.option("--mirror-axes", default=None, help="Comma-separated spatial axes to mirror (e.g. 0 or 0,1,2; 'all' = "
              "every axis of the plan; every combination of them is one pass) instead of the flips the package "
              "measured as worth it at training.")
@click.option("--overlap", type=float, default=None, help="Sliding-window overlap in [0, 1) (default: the one the "
              "package chose with its flips at training; 0.5 for older packages or with --no-mirror / "
              "--mirror-axes).")
@click.option("--runtime", type=click.Choice(["auto", "torch", "onnx"]), default="torch", show_default=True,
              help="Engine for the network: torch; onnx (ONNX Runtime, 2.6x faster on a CT-sized volume with the "
              "planner's network, slower on the demo's small one); auto = ONNX Runtime when its output equals "
              "PyTorch's within 1e-4, else PyTorch.")
@click.option("--probabilities", is_flag=True, help="Also write per-class probability maps (4D NIfTI).")
@click.option("--uncertainty", is_flag=True, help="Also write a per-voxel entropy map.")
@click.option("--network", default=None, help="Build this registered network instead of the one the model "
              "recorded (e.g. a plug-in renamed since training); the weights must fit it.")
@click.option("--allow-retired", is_flag=True, help="Use the model even if the registry marks it retired.")
@click.pass_context
@audited("predict", inputs=("input_path",), outputs=("output",))
def predict(ctx: click.Context, model_dir: str, input_path: Path, output: Path, folds: str | None,
            no_mirror: bool, probabilities: bool, uncertainty: bool, network: str | None, allow_retired: bool,
            evidence: bool, mirror_axes: str | None, runtime: str, overlap: float | None) -> None:
    """Segment INPUT (a NIfTI/DICOM image, or a folder of {case}_0000.nii.gz files) into OUTPUT with MODEL.

    MODEL is a model package folder or a registered NAME[@VERSION]; it is verified (every file hash) first.

    OUTPUT is a .nii.gz file for one image or a folder for many. Label maps keep the input's geometry exactly,
    so they open aligned over the image in 3D Slicer or ITK-SNAP.
    """
    from medsight.errors import InputNotFoundError
    from medsight.segmentation.predict import Predictor, write_prediction
    from medsight.io import read_image

    from medsight.errors import ConfigError
    from medsight.package.package import load_package

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    pkg = load_package(model_dir, allow_retired=allow_retired)
    if pkg.task != "segmentation":
        raise ConfigError(f"package {pkg.label} is a {pkg.task} model; `medsight predict` needs a segmentation model")
    current_event().package(pkg)
    axes: list[int] | str | None = "all" if mirror_axes is not None and mirror_axes.strip() == "all" else None
    if mirror_axes is not None and axes is None:
        try:
            axes = [int(a) for a in mirror_axes.split(",") if a.strip()]
        except ValueError:
            raise ConfigError(f"--mirror-axes takes comma-separated axis numbers or 'all', got {mirror_axes!r}"
                              ) from None
    predictor = Predictor(pkg.path, folds=folds.split(",") if folds else None, mirror=not no_mirror,
                          mirror_axes=axes, network=network, runtime=runtime, overlap=overlap)
    n_channels = len(predictor.plan.channels)
    jobs: list[tuple[list[Path], Path]] = []
    if input_path.is_dir() and any(input_path.glob("*_0000.nii*")):
        out_dir = output
        for first in sorted(input_path.glob("*_0000.nii*")):
            case = re.sub(r"_0000\.nii(\.gz)?$", "", first.name)
            chans = [input_path / first.name.replace("_0000", f"_{c:04d}") for c in range(n_channels)]
            missing = [p.name for p in chans if not p.is_file()]
            if missing:
                raise InputNotFoundError(f"case {case} lacks channel file(s) {', '.join(missing)}", input_path)
            jobs.append((chans, out_dir / f"{case}.nii.gz"))
    else:
        if not input_path.exists():
            raise InputNotFoundError("no such image or folder", input_path)
        jobs.append(([input_path], output if str(output).endswith((".nii", ".nii.gz")) else output / "prediction.nii.gz"))
    items = jobs
    if not quiet:
        from tqdm import tqdm

        items = tqdm(jobs, desc="predict", unit="case")
    for chans, out in items:
        images = [read_image(p) for p in chans]
        pred = predictor.predict(images if len(images) > 1 else images[0])
        written = write_prediction(pred, out, probabilities=probabilities, uncertainty=uncertainty)
        if evidence:
            from medsight.explain.predictions import evidence_path, lesion_table_beside, write_segmentation_evidence

            names = {v: k for k, v in predictor.plan.labels.items()}
            write_segmentation_evidence(images[0], pred.labels.array, pred.probabilities, names,
                                        evidence_path(out), lesion_table_beside(written), montage=True)
    click.echo(f"{len(jobs)} prediction(s) written to {output}")
