"""``medsight demo``: build the embedded demo data and run every pipeline stage on it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from pathlib import Path

import click

from medsight.demo import STAGES, DemoContext
from medsight.demo.summary import print_table
from medsight.files import atomic_write_text


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("medsight-out/demo"),
              show_default=True, help="Folder for the demo data, models, predictions and report.")
@click.option("--seed", default=0, show_default=True, help="Seeds Python, NumPy and torch; same seed, same results.")
@click.option("--fast", is_flag=True, help="A much smaller run (minutes less, numbers not meaningful); for smoke tests.")
@click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES),
              help="Run only these stages (repeatable). Default: all.")
@click.pass_context
def demo(ctx: click.Context, out_dir: Path, seed: int, fast: bool, stages: tuple[str, ...]) -> None:
    """Build the demo dataset (simulated from the real MNI ICBM152 template, no download) and run the pipeline.

    Prints a summary table and the paths of everything written; the summary is also saved as summary.json.
    """
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    dctx = DemoContext(out_dir=out_dir, seed=seed, quiet=quiet, fast=fast)
    wanted = stages or STAGES
    t0 = time.perf_counter()
    for name in STAGES:
        module = f"medsight.demo.{name}"
        if name not in wanted or importlib.util.find_spec(module) is None:
            continue
        t = time.perf_counter()
        dctx.results[name] = importlib.import_module(module).run(dctx)
        dctx.results[name]["seconds"] = round(time.perf_counter() - t, 1)
    dctx.results["total_seconds"] = round(time.perf_counter() - t0, 1)
    summary = out_dir / "summary.json"
    atomic_write_text(summary, json.dumps({"results": dctx.results, "paths": {k: str(v) for k, v in dctx.paths.items()}},
                                          indent=2, default=str))
    print_table(dctx.results)
    click.echo("\nWritten:")
    for key, path in sorted(dctx.paths.items()):
        click.echo(f"  {key:28s} {path}")
    click.echo(f"  {'summary':28s} {summary}")
