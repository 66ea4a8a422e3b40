"""The manifest of a model package: every file with its SHA-256, and the package id as a hash over it all.

Why one manifest: a model is weights *and* everything that changes what it outputs (plan, thresholds,
calibration, referral rule, OOD statistics). Listing each file with its hash, and hashing the listing itself,
gives the whole unit one identity: a changed byte, a missing file or a file nobody listed (a stray
``calibration.json``) all make ``verify_folder`` fail, naming the file.

``id`` = SHA-256 of the canonical JSON (sorted keys, no spaces) of the manifest without ``id`` and
``created_at``, so the same content always gets the same id.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from medsight import __version__
from medsight.errors import IntegrityError
from medsight.files import sha256_file

MANIFEST = "manifest.json"
FORMAT = "medsight-package"
FORMAT_VERSION = 1
TASKS = ("segmentation", "classification", "slide", "mil", "encoder", "other")
TRACKED_LIBRARIES = ("torch", "monai", "numpy", "scipy", "scikit-learn", "pydicom", "SimpleITK", "nibabel")
_UNHASHED = ("id", "created_at")


class PackageError(IntegrityError):
    """A model package that does not verify: changed, missing or unlisted file, edited manifest, retired model."""


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries a result depends on (metadata only: no imports); absent ones are left
    out. The one place medsight reads versions: packages, reports and evaluation tables all call it."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def package_id(manifest: dict[str, Any]) -> str:
    """SHA-256 over the canonical manifest (without ``id`` and ``created_at``)."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k not in _UNHASHED})).hexdigest()


def package_files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` except the manifest, as sorted POSIX relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.relative_to(folder).as_posix() != MANIFEST)


def build_manifest(folder: Path, *, task: str, name: str, parent_id: str | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of the files now in ``folder`` (hashes computed here), with its id."""
    files = {}
    for rel in package_files(folder):
        path = folder / rel
        if path.is_symlink():
            raise PackageError(f"{rel} is a symbolic link; a package holds only regular files", path)
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "task": task,
        "medsight_version": __version__, "parent_id": parent_id, "files": files,
        "library_versions": library_versions(), "extra": dict(extra or {}),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest["id"] = package_id(manifest)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The parsed manifest.json of ``folder``; PackageError when it is absent or not a package manifest."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise PackageError("model package folder not found; give a package folder or a registered NAME[@VERSION] "
                           "(see `medsight models list`)", folder)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageError("not a model package (no manifest.json); train it with a current medsight or package it "
                           "with `medsight models package`", folder) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PackageError(f"manifest.json is not valid JSON ({err}); the package is damaged", path) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise PackageError("manifest.json is not a medsight package manifest", path)
    return manifest


def verify_folder(folder: Path, manifest: dict[str, Any]) -> None:
    """Raise PackageError (one line, naming the file) unless ``folder`` holds exactly the manifest's files."""
    if package_id(manifest) != manifest.get("id"):
        raise PackageError(f"manifest.json was edited: its content no longer hashes to the package id "
                           f"{str(manifest.get('id'))[:12]}", folder / MANIFEST)
    listed: dict[str, dict[str, Any]] = manifest["files"]
    for rel in sorted(listed):
        path = folder / rel
        if not path.is_file():
            raise PackageError(f"package file {rel} is missing", path)
        if path.stat().st_size != listed[rel].get("bytes", path.stat().st_size) or sha256_file(path) != listed[rel]["sha256"]:
            raise PackageError(f"package file {rel} was changed (SHA-256 differs from manifest.json)", path)
    unlisted = [rel for rel in package_files(folder) if rel not in listed]
    if unlisted:
        raise PackageError(f"unlisted file {unlisted[0]} in the package (not in manifest.json); remove it, or write "
                           "a new package version that includes it", folder / unlisted[0])
