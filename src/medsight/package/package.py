"""save_package / load_package: a trained model as one verified unit with one identity.

``save_package`` copies a folder into a staging folder next to the target, writes the manifest, fsyncs every
file and folder, and only then puts it in place: with ``renameat2(RENAME_EXCHANGE)`` the old and new package
swap in one atomic step (Linux), so a crash leaves either the old package or the new one, never a mix. It then
registers the package (``medsight.package.registry``). ``load_package`` takes a folder or a registered
``NAME[@VERSION]``, verifies every hash, and refuses a changed, missing or unlisted file and a retired model.

A registered version never changes on disk: ``derive_package`` writes a new version (e.g. with a fitted
calibration) into its own folder with the parent's id recorded, and ``save_package`` over a folder that holds a
registered version first copies that version to ``<folder>.versions/<id12>`` and points the registry there, so
``NAME@VERSION`` keeps loading the exact bytes it registered.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.errors import ConfigError, InputNotFoundError
from medsight.files import _fsync_dir, atomic_write_text, sweep_stale, temp_prefix
from medsight.package.manifest import (MANIFEST, TASKS, PackageError, build_manifest, read_manifest,
                                       verify_folder)

log = logging.getLogger(__name__)
_SKIP = shutil.ignore_patterns(MANIFEST, "__pycache__")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@dataclass(frozen=True)
class Package:
    """A verified package on disk. ``file(name)`` gives a path only for files the manifest lists."""

    path: Path
    manifest: dict[str, Any]
    version: int | None = None  # the registry's version number, when known
    status: str | None = None

    @property
    def id(self) -> str:
        return str(self.manifest["id"])

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def parent_id(self) -> str | None:
        return self.manifest.get("parent_id")

    @property
    def files(self) -> list[str]:
        return sorted(self.manifest["files"])

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.manifest.get("extra") or {})

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def file(self, name: str) -> Path:
        """The path of a listed file; PackageError for anything the manifest does not list."""
        if name not in self.manifest["files"]:
            raise PackageError(f"package {self.name} ({self.id[:12]}) has no file {name}", self.path)
        return self.path / name

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.file(name).read_text())
        except json.JSONDecodeError as err:
            raise PackageError(f"package file {name} is not valid JSON ({err.msg})", self.path / name) from err

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}" if self.version is not None else f"{self.name} ({self.id[:12]})"


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk, deepest first, so the rename publishes durable data."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        _fsync_dir(path)  # an O_RDONLY fsync: works for files and folders alike
    _fsync_dir(folder)
    _fsync_dir(folder.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _publish(staging: Path, dest: Path) -> None:
    """Put ``staging`` at ``dest``; an existing package there is replaced only at this single step."""
    if not dest.exists():
        os.rename(staging, dest)
    elif _exchange(staging, dest):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old package
    else:  # no atomic exchange on this system: two renames, the old one kept until the new one is in place
        old = dest.with_name(f"{temp_prefix(dest)}old")
        os.rename(dest, old)
        os.rename(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)


def check_target(dest: Path) -> None:
    """Refuse to replace a folder that holds something other than a model package."""
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / MANIFEST).is_file())):
        raise ConfigError("exists and is not a model package; choose another output folder or remove it", dest)


def _keep_registered(dest: Path, registry_url: str | None, new_id: str) -> None:
    """Before ``dest`` is replaced: copy the registered version(s) it holds to ``<dest>.versions/<id12>`` (fsynced)
    and move their registry rows there, so a registered version keeps its bytes and keeps loading by name."""
    if not (dest / MANIFEST).is_file():
        return
    from medsight.package.registry import Registry

    try:
        manifest = read_manifest(dest)
    except PackageError:
        return  # a damaged package: nothing registered can be trusted to be in it
    if manifest.get("id") == new_id:
        return  # the same content again: nothing changes on disk
    registry = Registry(registry_url, create=False)
    records = [r for r in registry.list() if r.id == manifest.get("id") and Path(r.path) == dest.resolve()]
    if not records:
        return
    verify_folder(dest, manifest)  # keep only what still is the registered content
    archive = dest.with_name(f"{dest.name}.versions") / str(manifest["id"])[:12]
    if not (archive / MANIFEST).is_file():
        archive.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(archive, "keep-"), dir=archive.parent))
        try:
            shutil.copytree(dest, tmp, dirs_exist_ok=True, symlinks=False)
            _fsync_tree(tmp)
            os.rename(tmp, archive)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(archive.parent)
    for rec in records:
        registry.move(rec, archive.resolve())
        log.info("%s kept at %s (its folder %s gets a new package)", rec.ref, archive, dest)


def save_package(src_dir: str | Path, dest_dir: str | Path, *, task: str, name: str, parent_id: str | None = None,
                 extra: dict[str, Any] | None = None, register: bool = True,
                 registry_url: str | None = None, force: bool = False) -> Package:
    """Copy ``src_dir`` into the package ``dest_dir`` with a manifest, atomically, and register it.

    A package whose ``extra`` says ``below_target`` (it missed its own validation target) is written but not
    registered, so it never becomes a serving candidate, unless ``force``; versions derived from it inherit that.

    ``extra`` (JSON) lands in the manifest: ``data_fingerprint`` and ``metrics`` are what the registry shows.
    ``dest_dir`` may be an existing package (replaced as a unit; a registered version there is first kept at
    ``<dest_dir>.versions/<id12>``) or absent/empty; ``src_dir`` may be ``dest_dir`` itself (a new version built
    from the files now there).
    """
    src, dest = Path(src_dir), Path(dest_dir)
    if task not in TASKS:
        raise ConfigError(f"package task must be one of {', '.join(TASKS)}, got {task!r}")
    if not name or "@" in name or "/" in name or name.startswith("."):
        raise ConfigError(f"invalid package name {name!r}: letters, digits, '-', '_' or '.', no '@' or '/'")
    if not src.is_dir() or not any(src.iterdir()):
        raise InputNotFoundError("model folder not found or empty", src)
    check_target(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(dest)  # a killed writer's staging folder (its process is gone)
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(dest, "staging-"), dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would make the published package private to its writer
    try:
        shutil.copytree(src, staging, dirs_exist_ok=True, ignore=_SKIP, symlinks=False)
        manifest = build_manifest(staging, task=task, name=name, parent_id=parent_id, extra=extra)
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
        _fsync_tree(staging)
        _keep_registered(dest, registry_url, manifest["id"])
        _publish(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    pkg = Package(dest.resolve(), manifest)
    if register and (extra or {}).get("below_target") and not force:
        log.warning("model package %s is below target (%s): written to %s but not registered; --force registers it",
                    name, extra["below_target"], dest)
        register = False
    if register:
        from medsight.package.registry import Registry

        rec = Registry(registry_url).register(pkg)
        pkg = Package(pkg.path, manifest, rec.version, rec.status)
    log.info("model package %s written to %s (id %s)", pkg.label, dest, pkg.id[:12])
    return pkg


def derive_package(parent: Package, *, files: dict[str, bytes | None], extra: dict[str, Any] | None = None,
                   dest_dir: str | Path | None = None, register: bool = True,
                   registry_url: str | None = None) -> Package:
    """A new package version: ``parent``'s files with ``files`` added or replaced (None removes one).

    Written to ``dest_dir`` with ``parent_id`` recorded; by default into its own content-addressed folder beside
    the parent, ``<parent folder>-<id12>``: the parent's folder is never touched.
    """
    verify_folder(parent.path, parent.manifest)
    near = Path(dest_dir) if dest_dir is not None else parent.path
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(near, "derive-"),
                                 dir=near.parent if near.parent.exists() else None))
    try:
        shutil.copytree(parent.path, work, dirs_exist_ok=True, ignore=_SKIP)
        for rel, data in files.items():
            target = work / rel
            if data is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        merged = {**parent.extra, **(extra or {})}
        if dest_dir is None:
            pid = build_manifest(work, task=parent.task, name=parent.name, parent_id=parent.id, extra=merged)["id"]
            dest = parent.path.with_name(f"{_base(parent.path.name)}-{pid[:12]}")
        else:
            dest = Path(dest_dir)
        if dest.resolve() == parent.path.resolve():
            raise ConfigError("a derived version goes into its own folder, not over its parent's", dest)
        return save_package(work, dest, task=parent.task, name=parent.name, parent_id=parent.id,
                            extra=merged, register=register, registry_url=registry_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _base(folder_name: str) -> str:
    """A folder name without the ``-<id12>`` a derived version appended (so versions do not nest names)."""
    stem, _, tail = folder_name.rpartition("-")
    return stem if stem and len(tail) == 12 and all(c in "0123456789abcdef" for c in tail) else folder_name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` -> (name, version or None)."""
    name, _, version = ref.partition("@")
    if not version:
        return name, None
    if not version.isdigit():
        raise ConfigError(f"model version must be a number (NAME@3), got {ref!r}")
    return name, int(version)


def load_package(path_or_name: str | Path, *, allow_retired: bool = False, registry_url: str | None = None) -> Package:
    """Verify and return a package given as a folder or a registered ``NAME[@VERSION]``.

    Every listed file is re-hashed; a changed, missing or unlisted file, an edited manifest, an unknown name, or a
    retired model (unless ``allow_retired``) raises PackageError / InputNotFoundError with one line.
    """
    from medsight.package.registry import Registry

    ref = Path(path_or_name)
    registry = Registry(registry_url, create=False)
    record = None
    if not ref.exists() and "/" not in str(path_or_name):
        record = registry.get(*parse_ref(str(path_or_name)))
        folder = Path(record.path)
    else:
        folder = ref
    manifest = read_manifest(folder)
    verify_folder(folder, manifest)
    if record is not None and record.id != manifest["id"]:
        raise PackageError(f"{record.name}@{record.version} (id {record.id[:12]}) was replaced on disk by package "
                           f"{manifest['id'][:12]}; load that one, or the registered version that matches it", folder)
    if record is None:
        record = registry.find_id(manifest["id"])
    if record is not None and record.status == "retired" and not allow_retired:
        raise PackageError(f"model {record.name}@{record.version} is retired; pass --allow-retired to use it anyway",
                           folder)
    return Package(folder.resolve(), manifest, record.version if record else None, record.status if record else None)
