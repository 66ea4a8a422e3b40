"""``medsight models list|show|verify|promote|package``: the registry of model packages, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from medsight.cli.audited import audited

_REGISTRY = click.option("--registry", "registry_url", default=None,
                         help="Registry URL or SQLite file (default: $MEDSIGHT_REGISTRY_URL or "
                              "$MEDSIGHT_HOME/registry.db).")


@click.group()
def models() -> None:
    """List, show, verify and promote model packages (hashed manifest + registry status)."""


@models.command("list")
@_REGISTRY
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(registry_url: str | None, as_json: bool) -> None:
    """Every registered package version: name@version, status, task, package id, headline metrics."""
    from medsight.package.registry import Registry

    reg = Registry(registry_url, create=False)
    records = reg.list()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2, default=str))
        return
    if not records:
        click.echo(f"no models registered in {reg.url}")
        return
    click.echo(f"{'model':28s} {'status':10s} {'task':15s} {'id':14s} {'registered':26s} metrics")
    for r in records:
        metrics = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.metrics.items())
        click.echo(f"{r.ref:28s} {r.status:10s} {r.task:15s} {r.id[:12]:14s} {r.registered_at:26s} {metrics}")


@models.command()
@click.argument("model")
@_REGISTRY
@click.option("--json", "as_json", is_flag=True, help="Print the registry row and manifest as JSON.")
def show(model: str, registry_url: str | None, as_json: bool) -> None:
    """Show MODEL (NAME[@VERSION] or a package folder): registry row, manifest files and hashes, lineage."""
    from medsight.package.manifest import read_manifest
    from medsight.package.package import parse_ref
    from medsight.package.registry import Registry

    reg = Registry(registry_url, create=False)
    folder = Path(model)
    rec = None if folder.exists() else reg.get(*parse_ref(model))
    manifest = read_manifest(Path(rec.path) if rec else folder)
    rec = rec or reg.find_id(manifest["id"])
    if as_json:
        click.echo(json.dumps({"registry": rec.to_dict() if rec else None, "manifest": manifest}, indent=2, default=str))
        return
    click.echo(f"model {manifest['name']}" + (f"@{rec.version}  status {rec.status}" if rec else "  (not registered)"))
    click.echo(f"id {manifest['id']}\ntask {manifest['task']}  medsight {manifest['medsight_version']}  "
               f"parent {manifest.get('parent_id') or '-'}\npath {rec.path if rec else folder}")
    click.echo("libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("library_versions", {}).items())))
    click.echo("files:")
    for rel, info in sorted(manifest["files"].items()):
        click.echo(f"  {info['sha256'][:16]}  {info['bytes']:>10d}  {rel}")
    if manifest.get("extra"):
        click.echo("extra: " + json.dumps(manifest["extra"], sort_keys=True, default=str))


def _superseded(rec, reg) -> str | None:  # noqa: ANN001 - ModelRecord, Registry
    """'NAME@V' when rec's folder now holds a later registered version of the same name (a derived package)."""
    from medsight.package.manifest import read_manifest
    from medsight.errors import MedsightError

    try:
        now = reg.find_id(read_manifest(Path(rec.path))["id"])
    except MedsightError:
        return None
    return now.ref if now is not None and now.name == rec.name and now.version > rec.version else None


@models.command()
@click.argument("model", required=False)
@click.option("--all", "all_", is_flag=True,
              help="Verify every registered version (versions replaced in their folder by a later one are listed "
                   "as superseded).")
@_REGISTRY
def verify(model: str | None, all_: bool, registry_url: str | None) -> None:
    """Re-hash every file of MODEL (NAME[@VERSION] or a package folder); exit 2 naming the first bad file."""
    from medsight.errors import ConfigError
    from medsight.package.package import load_package
    from medsight.package.registry import Registry

    if all_:
        reg = Registry(registry_url, create=False)
        refs = []
        for rec in reg.list():
            later = _superseded(rec, reg)
            if later:
                click.echo(f"--  {rec.ref}  superseded in {rec.path} by {later}")
            else:
                refs.append(rec.ref)
    elif model:
        refs = [model]
    else:
        raise ConfigError("name a model (NAME[@VERSION] or a package folder) to verify, or pass --all")
    for ref in refs:
        pkg = load_package(ref, allow_retired=True, registry_url=registry_url)
        click.echo(f"ok  {pkg.label}  id {pkg.id[:12]}  {len(pkg.files)} files match"
                   + (f"  [{pkg.status}]" if pkg.status else ""))


@models.command()
@click.argument("model")
@click.option("--to", "status", type=click.Choice(["approved", "retired"]), default=None,
              help="Target status (default: the next one: candidate -> approved -> retired).")
@_REGISTRY
@audited("models.promote")
def promote(model: str, status: str | None, registry_url: str | None) -> None:
    """Move MODEL (NAME@VERSION) to its next status; the package is verified first and the change audited."""
    from medsight.cli.audited import current_event
    from medsight.package.package import load_package
    from medsight.package.registry import Registry

    pkg = load_package(model, allow_retired=True, registry_url=registry_url)
    reg = Registry(registry_url)
    rec = reg.get(pkg.name, pkg.version) if pkg.version is not None else None
    if rec is None:
        from medsight.errors import ConfigError

        raise ConfigError(f"{model} is not registered; register it by saving it as a package first")
    target = status or {"candidate": "approved", "approved": "retired"}.get(rec.status, "retired")
    before = rec.status
    rec = reg.set_status(rec.name, rec.version, target)
    current_event().package(pkg).note(previous_status=before, status=rec.status, model=rec.ref)
    click.echo(f"{rec.ref}: {before} -> {rec.status}")


@models.command("package")
@click.argument("src", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Registry name of the package.")
@click.option("--task", type=click.Choice(["segmentation", "classification", "slide", "mil", "other"]), required=True)
@_REGISTRY
@audited("models.package", inputs=("src",), outputs=("dest",))
def package_cmd(src: Path, dest: Path, name: str, task: str, registry_url: str | None) -> None:
    """Turn a model folder written by an older medsight (SRC) into a verified, registered package at DEST."""
    from medsight.package.package import save_package

    from medsight.cli.audited import current_event

    _check_model_folder(src, task)
    pkg = save_package(src, dest, task=task, name=name, registry_url=registry_url)
    current_event().package(pkg).note(model=pkg.label, task=task)
    click.echo(f"{pkg.label}  id {pkg.id[:12]}  {len(pkg.files)} files -> {pkg.path}")


# what a model folder of each task holds (glob patterns), so that a folder of something else is not packaged
_MODEL_FILES = {"segmentation": ("plan.json", "fold_*/model_final.pt"), "classification": ("config.json", "model.pt"),
                "mil": ("config.json", "model.pt"), "slide": ("*.pt",)}


def _check_model_folder(src: Path, task: str) -> None:
    from medsight.errors import InputNotFoundError

    missing = [pattern for pattern in _MODEL_FILES.get(task, ()) if not any(src.glob(pattern))]
    if missing:
        raise InputNotFoundError(f"not a {task} model folder: no {' and no '.join(missing)} in it; package the "
                                 f"folder that training wrote (or use --task other)", src)
