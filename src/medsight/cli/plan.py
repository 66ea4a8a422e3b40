"""``medsight plan DATASET``: fingerprint a dataset and write its training plan (JSON)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--memory-gb", default=8.0, show_default=True, help="Training memory budget; sets patch, batch, width.")
@click.option("--filters", "base_filters", type=int, default=None, help="Base filter count (default: from memory).")
@click.option("--epochs", default=100, show_default=True, help="Epochs written into the plan.")
@click.option("--iterations", default=50, show_default=True, help="Iterations per epoch written into the plan.")
@click.option("--network", default="dynunet", show_default=True, help="Network for every configuration: "
              "dynunet, attention_unet, swinunetr or one registered by an installed plug-in ('medsight.networks').")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write the plan (default: DATASET/medsight_plan.json).")
@click.pass_context
def plan(ctx: click.Context, dataset: Path, memory_gb: float, base_filters: int | None, epochs: int,
         iterations: int, network: str, out: Path | None) -> None:
    """Validate DATASET (MSD / nnU-Net layout), fingerprint it and write a plan with the reason for every choice.

    The same dataset and options always give the same plan (and plan hash).
    """
    from medsight.data.dataset import load_dataset, validate
    from medsight.data.fingerprint import compute_fingerprint
    from medsight.files import atomic_write_text
    from medsight.plan.planner import make_plan

    from medsight.nets.segmentation import network_provenance

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    network_provenance(network)  # an unknown network stops here, with the list of installed ones
    ds = load_dataset(dataset)
    validate(ds, require_labels=True)
    fp = compute_fingerprint(ds, quiet=quiet)
    p = make_plan(fp, memory_gb=memory_gb, base_filters=base_filters, epochs=epochs,
                  iterations_per_epoch=iterations, network=network)
    out = out or Path(dataset) / "medsight_plan.json"
    p.save(out)
    import json

    atomic_write_text(out.with_name(out.stem + "_fingerprint.json"), json.dumps(fp, indent=1))
    if not quiet:
        for line in p.reasons:
            click.echo(f"  - {line}")
        for name, cfg in p.configurations.items():
            click.echo(f"  [{name}] patch {cfg.patch_size} batch {cfg.batch_size} filters {cfg.filters}")
    click.echo(f"plan {p.sha256()[:12]} written to {out}")
