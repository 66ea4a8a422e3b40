"""``medsight pretrain DATA -o ENCODER_PACKAGE``: self-supervised pretraining on unlabelled volumes."""

from __future__ import annotations

from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True,
              help="Encoder package folder to write (training state goes to OUT.training/).")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), required=True,
              help="Plan JSON of the task to fine-tune (`medsight plan`): its configuration fixes the network, "
              "grid and normalisation the encoder is pretrained for.")
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
def pretrain(ctx: click.Context, data: Path, out: Path, plan_path: Path, config: str, method: str, epochs: int,
             iterations: int, batch_size: int | None, seed: int, max_minutes: float | None, nproc: int,
             name: str | None) -> None:
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
    dd.init_from_env()
    plan = Plan.load(plan_path)
    pkg, summary = run_pretrain(data, out, plan, config, method, epochs, iterations, batch_size, seed,
                                None if max_minutes is None else max_minutes * 60, name, quiet)
    if pkg is not None:
        current_event().package(pkg).outputs([out])
        t = summary["training"]
        click.echo(f"encoder package {pkg.label} (id {pkg.id[:12]}): {method} on {summary['data']['volumes']} "
                   f"volumes, {t['epochs_done']}/{t['epochs_planned']} epochs, val loss {t['final_val_loss']:.4f}, "
                   f"{t['seconds_this_run']} s; written to {out}")
    dd.shutdown()
