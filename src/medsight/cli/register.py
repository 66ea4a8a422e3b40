"""``medsight register FIXED MOVING -o OUT``: align one study onto another (rigid, affine or deformable)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command()
@click.argument("fixed", type=click.Path(path_type=Path))
@click.argument("moving", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output folder: moved.nii.gz, moved_labels.nii.gz, transform.h5, linear.tfm, quality.json.")
@click.option("--labels", "labels", type=click.Path(path_type=Path), default=None,
              help="Label map on MOVING's grid, carried onto FIXED's grid (nearest neighbour).")
@click.option("--fixed-labels", type=click.Path(path_type=Path), default=None,
              help="Label map on FIXED's grid: quality.json then reports label Dice before and after.")
@click.option("--mode", type=click.Choice(["rigid", "affine", "deformable"]), default="deformable", show_default=True,
              help="rigid (6 parameters), affine (12), deformable (affine then a B-spline, 40 mm control spacing).")
@click.option("--force", is_flag=True, help="Register even when the DICOM PatientIDs differ (e.g. atlas to patient).")
@audited("register", inputs=("fixed", "moving", "labels", "fixed_labels"), outputs=("output",))
def register(fixed: Path, moving: Path, output: Path, labels: Path | None, fixed_labels: Path | None, mode: str,
             force: bool) -> None:
    """Register MOVING onto FIXED (NIfTI files or DICOM series folders) with mutual information.

    The transform is written in ITK's formats (3D Slicer and ANTs read them); docs/registration.md explains how to
    load the outputs in Slicer and what the quality record means.
    """
    from medsight.io import read_image
    from medsight.registration.register import align, check_pair, write_outputs

    fixed_img, moving_img = read_image(fixed), read_image(moving)
    checks = check_pair(fixed_img, moving_img, fixed, moving, force=force)
    reg = align(fixed_img, moving_img, mode, read_image(labels) if labels else None,
                read_image(fixed_labels) if fixed_labels else None)
    write_outputs(reg, output, checks)
    q = reg.quality
    current_event().note(mode=mode, seconds=q["seconds"], folding_percent=q["jacobian"]["folding_percent"],
                         patient_check=checks["patient_check"])
    line = (f"registered ({mode}) in {q['seconds']:.0f} s: MI {q['metric']['before']:.3f} -> {q['metric']['after']:.3f}, "
            f"Jacobian {q['jacobian']['min']:.2f}..{q['jacobian']['max']:.2f}, folding "
            f"{q['jacobian']['folding_percent']:.3f} % of {q['jacobian']['n_voxels']} voxels")
    if "label_dice" in q:
        line += f", mean label Dice {q['label_dice']['mean_before']} -> {q['label_dice']['mean_after']}"
    click.echo(line)
    click.echo(f"outputs in {output} ({json.dumps(sorted(p.name for p in output.iterdir()))})")
