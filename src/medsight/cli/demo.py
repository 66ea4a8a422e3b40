"""``medsight demo``: build the embedded demo data and run every pipeline stage on it.

Each stage's folders are its own (``OUTPUTS`` of the stage module). A stage's record ``stages/<stage>.json`` is
written first as ``running`` and replaced by ``complete`` (its summary and paths) as the stage's last act, and
``summary.json`` is written after every stage is complete: a kill at any point leaves no record claiming a
partial stage. The next run reuses the complete stages of the same seed and size, redoes the first stage that is
not complete (removing what its killed attempt wrote) and every stage after it; ``--fresh`` redoes them all.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

import click

from medsight.demo import STAGES, DemoContext
from medsight.demo.summary import print_table
from medsight.files import atomic_write_text, sweep_tree

RECORDS = "stages"


def _record_path(out_dir: Path, name: str) -> Path:
    return out_dir / RECORDS / f"{name}.json"


def _read_record(out_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(_record_path(out_dir, name).read_text())
    except (OSError, ValueError):
        return None


def _reusable(record: dict[str, Any] | None, config: dict[str, Any]) -> bool:
    """A complete record of the same seed, size and medsight version whose files are all still there."""
    return (record is not None and record.get("state") == "complete" and record.get("config") == config
            and all(Path(p).exists() for p in record.get("paths", {}).values()))


def _outputs(name: str) -> tuple[str, ...]:
    return tuple(getattr(importlib.import_module(f"medsight.demo.{name}"), "OUTPUTS", (name,)))


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("medsight-out/demo"),
              show_default=True, help="Folder for the demo data, models, predictions and report.")
@click.option("--seed", default=0, show_default=True, help="Seeds Python, NumPy and torch; same seed, same results.")
@click.option("--fast", is_flag=True, help="A much smaller run (minutes less, numbers not meaningful); for smoke tests.")
@click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES),
              help="Run only these stages (repeatable). Default: all.")
@click.option("--fresh", is_flag=True, help="Redo every stage, even those a previous run of the same seed and size "
              "completed (by default they are reused, so a killed run resumes where it stopped).")
@click.pass_context
def demo(ctx: click.Context, out_dir: Path, seed: int, fast: bool, stages: tuple[str, ...], fresh: bool) -> None:
    """Build the demo dataset (simulated from the real MNI ICBM152 template, no download) and run the pipeline.

    Prints a summary table and the paths of everything written; the summary is also saved as summary.json.
    """
    import medsight

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    dctx = DemoContext(out_dir=out_dir, seed=seed, quiet=quiet, fast=fast)
    config = {"seed": seed, "fast": fast, "medsight": medsight.__version__}
    wanted = stages or STAGES
    summary = out_dir / "summary.json"
    t0 = time.perf_counter()
    redo = fresh
    reused: list[str] = []
    for name in STAGES:
        module = f"medsight.demo.{name}"
        if importlib.util.find_spec(module) is None:
            continue
        record = _read_record(out_dir, name)
        if not redo and _reusable(record, config):  # complete from an earlier run: its paths feed later stages
            dctx.paths.update({k: Path(v) for k, v in record["paths"].items()})
            if name in wanted:
                dctx.results[name] = record["results"]
                reused.append(name)
            continue
        if name not in wanted:
            continue
        redo = True  # this stage's inputs to later stages change: they are redone too
        summary.unlink(missing_ok=True)
        for later in STAGES[STAGES.index(name) + 1:]:
            _record_path(out_dir, later).unlink(missing_ok=True)
        if record is not None and record.get("state") == "running":  # a killed attempt: its files are ours
            for folder in _outputs(name):
                shutil.rmtree(out_dir / folder, ignore_errors=True)
        sweep_tree(out_dir)  # half-written temporaries of a killed run (their process is gone)
        atomic_write_text(_record_path(out_dir, name), json.dumps({"state": "running", "config": config}))
        before = dict(dctx.paths)
        t = time.perf_counter()
        dctx.results[name] = importlib.import_module(module).run(dctx)
        dctx.results[name]["seconds"] = round(time.perf_counter() - t, 1)
        paths = {k: str(v) for k, v in dctx.paths.items() if before.get(k) != v}
        atomic_write_text(_record_path(out_dir, name), json.dumps(
            {"state": "complete", "config": config, "results": dctx.results[name], "paths": paths},
            indent=2, default=str))
    dctx.results["total_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(summary, json.dumps({"results": dctx.results, "paths": {k: str(v) for k, v in dctx.paths.items()},
                                           "reused_stages": reused}, indent=2, default=str))
    print_table(dctx.results)
    if reused:
        click.echo(f"\nReused from an earlier run (same seed and size; --fresh redoes them): {', '.join(reused)}")
    click.echo("\nWritten:")
    for key, path in sorted(dctx.paths.items()):
        click.echo(f"  {key:28s} {path}")
    click.echo(f"  {'summary':28s} {summary}")
