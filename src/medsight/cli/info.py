"""``medsight info PATH``: what an image file or DICOM folder holds - series, geometry, scanner, provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--series", "series_uid", default=None, metavar="UID",
              help="Describe this series of a folder that holds several (UIDs are listed without it).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.pass_context
def info(ctx: click.Context, path: Path, series_uid: str | None, as_json: bool) -> None:
    """Describe PATH: a DICOM file or folder, a NIfTI, PNG or JPEG file.

    For a folder with several DICOM series every series is listed (from headers only, nothing decoded); pick one
    with --series UID to read it and see its full geometry and provenance. Nothing is written.
    """
    from medsight.io import read_image

    from medsight.io.slide import is_slide_path

    if is_slide_path(path):  # whole-slide images have their own reader and description (cli/wsi.py)
        from medsight.cli.wsi import print_slide

        return print_slide(path, as_json)
    progress = not (ctx.obj or {}).get("quiet", False)
    report: dict[str, Any] = {"path": str(path), "series": [], "image": None}
    if _is_dicom_input(path):
        from medsight.io.dicom import scan_dicom  # pydicom is imported only for DICOM input

        scan = scan_dicom(path, series_uid=series_uid, progress=progress)  # each file read and parsed once
        series = scan.series()
        report["series"] = [s.to_dict() for s in series]
        images = [s for s in series if s.has_pixels]
        if series_uid is not None or len(images) == 1:
            report["image"] = _describe(scan.image(series_uid or images[0].series_uid))
        elif not images:
            scan.image()  # raises MissingPixelDataError with the file's name
    else:
        report["image"] = _describe(read_image(path))
    if as_json:
        for s in report["series"]:
            s.pop("files", None)
        click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        _print_tables(report)


def _is_dicom_input(path: Path) -> bool:
    from medsight.io import RASTER_SUFFIXES
    from medsight.io.nifti import is_nifti

    if not path.exists():
        return False  # read_image reports the missing path
    return path.is_dir() or not (is_nifti(path) or path.name.lower().endswith(RASTER_SUFFIXES))


def _describe(image: Any) -> dict[str, Any]:
    g = image.geometry
    arr = image.array
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    return {
        "shape": list(image.shape),
        "channels": int(arr.shape[-1]) if image.is_multichannel else 1,
        "dtype": str(arr.dtype),
        "spacing_mm": [round(float(s), 6) for s in g.spacing],
        "origin_mm_lps": [round(float(v), 4) for v in g.origin],
        "direction": [[round(float(v), 6) for v in row] for row in g.direction],
        "orientation": g.orientation_code() if g.ndim == 3 else None,
        "value_range": [float(finite.min()), float(finite.max())] if finite.size else None,
        "provenance": image.provenance.to_dict(),
    }


def _print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if len(report["series"]) > 1 or (report["series"] and report["image"] is None):
        t = Table(title=f"DICOM series in {report['path']}", title_justify="left")
        for col in ("#", "series UID", "modality", "description", "files", "shape", "spacing (mm)", "orient.",
                    "scanner", "note"):
            t.add_column(col, overflow="fold")
        for s in report["series"]:
            shape = "x".join(str(v) for v in s["shape"]) if s["shape"] else "-"
            spacing = " x ".join(f"{v:g}" for v in s["spacing"]) if s["spacing"] else "-"
            scanner = " ".join(v for v in (s["manufacturer"], s["scanner_model"]) if v) or "-"
            note = s["problem"] or ("" if s["has_pixels"] else "no pixel data")
            t.add_row(str(s["series_number"] or ""), s["series_uid"], s["modality"], s["description"],
                      str(s["n_files"]), shape, spacing, s["orientation"] or "-", scanner, note)
        console.print(t)
        if report["image"] is None and sum(1 for s in report["series"] if s["has_pixels"]) > 1:
            console.print("Several image series: describe one with [bold]--series UID[/bold].")
    image = report["image"]
    if image is None:
        return
    prov = image["provenance"]
    t = Table(title="Image", show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    rows = [
        ("shape", " x ".join(map(str, image["shape"])) + (f" x {image['channels']} channels"
                                                           if image["channels"] > 1 else "")),
        ("dtype", image["dtype"]),
        ("spacing (mm)", " x ".join(f"{v:g}" for v in image["spacing_mm"])),
        ("origin (mm, LPS)", ", ".join(f"{v:g}" for v in image["origin_mm_lps"])),
        ("orientation", image["orientation"] or "2D (no patient orientation)"),
        ("value range", " .. ".join(f"{v:g}" for v in image["value_range"]) if image["value_range"] else "-"),
        ("format", prov["format"]),
        ("modality", prov["modality"] or "-"),
        ("scanner", " ".join(v for v in (prov["manufacturer"], prov["scanner_model"]) if v) or "-"),
        ("protocol", prov["protocol"] or "-"),
        ("series", " ".join(v for v in (prov["series_description"], prov["series_uid"]) if v) or "-"),
        ("body part", prov["body_part"] or "-"),
    ]
    rows += [(f"  {k}", json.dumps(v) if not isinstance(v, str) else v) for k, v in sorted(prov["acquisition"].items())]
    rows += [("steps", ", ".join(s["name"] for s in prov["steps"]) or "-")]
    files = prov["source_files"]
    rows += [("source files", f"{len(files)}" + (f" (first: {files[0]['path']} sha256 {files[0]['sha256'][:16]}...)"
                                                  if files else ""))]
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)
