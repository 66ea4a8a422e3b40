"""``medsight models list|show|verify``: inspect the model registry and re-check its hashes."""

from __future__ import annotations

import json
from pathlib import Path

import click

_ROOT = click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=None,
                     help="Registry folder (default: $MEDSIGHT_HOME/models or ~/.medsight/models).")


@click.group()
def models() -> None:
    """List, show and verify registered models (weights + plan + model card + hashed manifest)."""


@models.command("list")
@_ROOT
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(root: Path | None, as_json: bool) -> None:
    """List every registered model version with its id, registration time and data manifest hash."""
    from medsight.package.registry import default_root, list_models

    records = list_models(root)
    if as_json:
        click.echo(json.dumps([{"name": r.name, "version": r.version, "id": r.id, "path": str(r.path),
                                "registered_at": r.manifest.get("registered_at")} for r in records], indent=2))
        return
    if not records:
        click.echo(f"no models registered under {root or default_root()}")
        return
    click.echo(f"{'name':24s} {'version':16s} {'id':14s} {'registered':26s} files")
    for r in records:
        click.echo(f"{r.name:24s} {r.version:16s} {r.id[:12]:14s} {r.manifest.get('registered_at', ''):26s} "
                   f"{len(r.files)}")


@models.command()
@click.argument("name")
@click.option("--version", default=None, help="Version to show (default: the latest).")
@_ROOT
@click.option("--card/--no-card", default=True, show_default=True, help="Print the model card as Markdown.")
def show(name: str, version: str | None, root: Path | None, card: bool) -> None:
    """Show a model's manifest (files and hashes, library versions, git commit) and its model card."""
    from medsight.package.registry import get_model

    rec = get_model(name, version, root)
    click.echo(f"model {rec.name} version {rec.version}\nid {rec.id}\npath {rec.path}")
    m = rec.manifest
    click.echo(f"registered {m.get('registered_at')}  git {m.get('git_commit')}  "
               f"data manifest {m.get('data_manifest_hash')}")
    click.echo("libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(m.get("library_versions", {}).items())))
    click.echo("files:")
    for rel, digest in sorted(rec.files.items()):
        click.echo(f"  {digest[:16]}  {rel}")
    if m.get("metadata"):
        click.echo("metadata: " + json.dumps(m["metadata"], sort_keys=True, default=str))
    if card:
        click.echo("")
        click.echo(rec.card.to_markdown())


@models.command()
@click.argument("name", required=False)
@click.option("--version", default=None, help="Version to verify (default: the latest).")
@click.option("--all", "all_", is_flag=True, help="Verify every registered version.")
@_ROOT
def verify(name: str | None, version: str | None, all_: bool, root: Path | None) -> None:
    """Recompute every file hash and the manifest id; exit 2 naming the first altered file."""
    from medsight.errors import ConfigError
    from medsight.package.registry import get_model, list_models, verify_model

    if all_:
        records = list_models(root)
    elif name:
        records = [get_model(name, version, root)]
    else:
        raise ConfigError("name a model to verify, or pass --all")
    for rec in records:
        verify_model(rec)
        click.echo(f"ok  {rec.name}/{rec.version}  id {rec.id[:12]}  {len(rec.files)} files match")
