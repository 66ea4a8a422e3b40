"""``medsight wsi``: whole-slide images - describe, tile (hashed manifest), extract tile features."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def wsi() -> None:
    """Whole-slide images: `tile` them into a hashed manifest, then extract tile `features` for MIL."""


@wsi.command("tile")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder (one subfolder per slide).")
@click.option("--tile-mpp", default=1.0, show_default=True, help="Microns per pixel of the tiles.")
@click.option("--size", default=224, show_default=True, help="Tile side in pixels at --tile-mpp.")
@click.option("--overlap", default=0, show_default=True, help="Overlap between neighbouring tiles, in pixels.")
@click.option("--min-tissue", default=0.5, show_default=True, help="Keep tiles with at least this tissue share.")
@click.option("--mask-mpp", default=4.0, show_default=True, help="Resolution of the tissue mask (um/px).")
@click.option("--mpp", type=float, default=None, help="Pixel size of the slides (um/px) when the files lack it, or to "
              "override it; recorded in the manifest.")
@click.pass_context
def tile(ctx: click.Context, slides: tuple[Path, ...], out_dir: Path, tile_mpp: float, size: int, overlap: int,
         min_tissue: float, mask_mpp: float, mpp: float | None) -> None:
    """Tile SLIDES into OUT/<slide>/tiles.json (+ thumbnail.png, tissue.geojson); finished slides are skipped.

    The manifest records the slide's SHA-256, the parameters, every tile's level-0 box and a tiling_hash over
    them: the same slide and options give the same hash anywhere.
    """
    from medsight.pathology.tiling import TilingParams, tile_slides

    params = TilingParams(mpp=tile_mpp, size=size, overlap=overlap, min_tissue=min_tissue, mask_mpp=mask_mpp)
    params.check()
    rows = tile_slides(slides, out_dir, params, mpp=mpp, progress=not (ctx.obj or {}).get("quiet"))
    for r in rows:
        click.echo(f"{r['id']}: {r['n_tiles']} tiles, tiling_hash {r['tiling_hash'][:16]}... ({r['status']})")


@wsi.command("features")
@click.argument("tiles_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--encoder", default="efficientnet-lite0", show_default=True,
              help="Encoder from the medsight.encoders registry (built in: efficientnet-lite0, vit).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Local checkpoint for the encoder (required for vit: a timm-layout ViT such as UNI).")
@click.option("--batch", default=32, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where features go (default: beside the tiles).")
@click.option("--threads", type=int, default=None, help="Torch threads (default: torch's choice).")
@click.pass_context
def features(ctx: click.Context, tiles_dir: Path, encoder: str, weights: Path | None, batch: int,
             out_dir: Path | None, threads: int | None) -> None:
    """Extract features for every slide tiled under TILES_DIR into <slide>/features.npz (resumable)."""
    import torch

    from medsight.nets.encoders import load_encoder
    from medsight.pathology.features import extract_dir

    if threads:
        torch.set_num_threads(threads)
    enc = load_encoder(encoder, weights)
    rows = extract_dir(tiles_dir, enc, out_dir, batch, progress=not (ctx.obj or {}).get("quiet"))
    for r in rows:
        click.echo(f"{r['id']}: {r['n_tiles']} tiles ({r['status']})")
    click.echo(f"encoder {enc.name}, weights sha256 {str(enc.provenance.get('weights_sha256'))[:16]}...")


@wsi.command("info")
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("--mpp", type=float, default=None, help="Pixel size (um/px) when the file lacks it.")
def info_cmd(slide: Path, mpp: float | None) -> None:
    """Describe a whole-slide image as JSON (levels, mpp, objective, associated images)."""
    click.echo(json.dumps(describe_slide(slide, mpp), indent=2))


def describe_slide(path: Path, mpp: float | None = None) -> dict:
    from medsight.io.slide import open_slide

    with open_slide(path, mpp=mpp) as s:
        return s.describe()


def print_slide(path: Path, as_json: bool) -> None:
    """What `medsight info` prints for a whole-slide image."""
    d = describe_slide(path)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Whole-slide image {d['path']}", show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    t.add_row("reader", f"{d['backend']} ({d['vendor']})")
    t.add_row("size (level 0)", f"{d['dimensions'][0]} x {d['dimensions'][1]} px")
    t.add_row("pixel size", f"{d['mpp']:g} um/px ({d['mpp_source']})")
    t.add_row("objective", f"{d['objective_power']:g}x" if d["objective_power"] else "-")
    for lv in d["levels"]:
        t.add_row(f"  level {lv['level']}", f"{lv['width']} x {lv['height']}, downsample {lv['downsample']:g}, "
                                           f"{lv['mpp']:g} um/px")
    t.add_row("associated images", ", ".join(d["associated_images"]) or "-")
    Console().print(t)
