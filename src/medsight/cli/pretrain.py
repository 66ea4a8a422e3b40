"""``medsight pretrain DATA -o ENCODER_PACKAGE``: self-supervised pretraining on unlabelled volumes."""

from __future__ import annotations

from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True,
              help="Encoder package folder to write (training state goes to OUT.training/).")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), default=None,
              help="For `train --init`: plan JSON of the segmentation task to fine-tune (`medsight plan`); its "
              "configuration fixes the network, grid and normalisation the encoder is pretrained for.")
@click.option("--backbone", default=None, help="For `train-cls --init`: pretrain this classification backbone "
              "(contrastive only) instead of a plan's segmentation network.")
@click.option("--input-size", default=None, help="With --backbone: network input size, e.g. 96,96 or 64,64,64 "
              "(the same as train-cls's).")
@click.option("--config", "config", type=click.Choice(["2d", "2.5d", "3d"]), default="3d", show_default=True)
@click.option("--method", type=click.Choice(["restore", "contrastive"]), default="restore", show_default=True,
              help="restore: Models Genesis corruption -> restoration (encoder and decoder); contrastive: SimCLR "
              "NT-Xent on two augmented overlapping crops (encoder).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--iterations", type=int, default=20, show_default=True, help="Optimiser steps per epoch.")
@click.option("--batch-size", type=int, default=None, help="Patches (restore) or pairs (contrastive) per step; "
              "default: the plan's batch (at least 4 pairs for contrastive).")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Stop after the epoch that passes this time.")
@click.option("--nproc", type=int, default=1, show_default=True, help="Data-parallel processes (PyTorch DDP).")
@click.option("--name", default=None, help="Registry name of the encoder package (default: the folder's name).")
@click.pass_context
@audited("pretrain", inputs=("data",))
def pretrain(ctx: click.Context, data: Path, out: Path, plan_path: Path | None, backbone: str | None,
             input_size: str | None, config: str, method: str, epochs: int, iterations: int,
             batch_size: int | None, seed: int, max_minutes: float | None, nproc: int, name: str | None) -> None:
    """Pretrain the plan's network on the unlabelled NIfTI / DICOM volumes under DATA (labels are never read).

    Resumable: run the same command after a kill and it continues from the last epoch. The result is a verified,
    registered package of kind `encoder`; give it to `medsight train --init OUT`.
    """
    from medsight.cli.train import _forward
    from medsight.engine import distributed as dd
    from medsight.errors import ConfigError
    from medsight.plan.plan import Plan
    from medsight.pretrain.run import pretrain as run_pretrain

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and dd.env_world_size() == 1:
        args = _forward({"dataset": data, **{k: v for k, v in ctx.params.items() if k != "data"}})
        ctx.exit(dd.launch(nproc, ["medsight.cli.main", *(["-q"] if quiet else []), "pretrain", *args]))
    budget = None if max_minutes is None else max_minutes * 60
    if (plan_path is None) == (backbone is None):
        raise ConfigError("give --plan (a segmentation network, for train --init) or --backbone (a classification "
                          "backbone, for train-cls --init), one of them")
    if backbone is not None:
        from medsight.cli.classify import _size
        from medsight.pretrain.run import pretrain_backbone

        if method != "contrastive" or nproc > 1:
            raise ConfigError("a classification backbone is pretrained with --method contrastive in one process "
                              "(it has no decoder to restore an image with)")
        size = _size(input_size)
        if size is None:
            raise ConfigError("--backbone needs --input-size (the size train-cls will use, e.g. 96,96)")
        pkg, summary = pretrain_backbone(data, out, backbone, size, epochs, iterations, batch_size, seed, budget,
                                         name, quiet)
    else:
        dd.init_from_env()
        pkg, summary = run_pretrain(data, out, Plan.load(plan_path), config, method, epochs, iterations,
                                    batch_size, seed, budget, name, quiet)
    if pkg is not None:
        current_event().package(pkg).outputs([out])
        t = summary["training"]
        click.echo(f"encoder package {pkg.label} (id {pkg.id[:12]}): {method} on {summary['data']['volumes']} "
                   f"volumes, {t['epochs_done']}/{t['epochs_planned']} epochs, val loss {t['final_val_loss']:.4f}, "
                   f"{t['seconds_this_run']} s; written to {out}")
    dd.shutdown()
