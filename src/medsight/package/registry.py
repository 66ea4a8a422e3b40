"""Versioned model store: each model version is a folder whose manifest hashes every file it holds.

Layout under the registry root (``$MEDSIGHT_HOME/models``, default ``~/.medsight/models``)::

    <name>/<version>/            version = metadata["version"] or the first 12 hex digits of the id
        weights, plan / config JSONs, calibration.json ...   (copied from the source folder)
        model_card.json          the ModelCard
        manifest.json            {files: {relative path: sha256}, library versions, git commit,
                                  data manifest hash, metadata, id}

``id`` = SHA-256 of the canonical JSON of the manifest without ``id`` and ``registered_at``, so the same content
always gets the same id and any change to a file, the card or the manifest changes it. ``verify_model`` recomputes
every hash and raises ``IntegrityError`` naming the first file that no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from medsight.errors import ConfigError, InputNotFoundError, IntegrityError
from medsight.files import atomic_write_text, sha256_file
from medsight.package.model_card import ModelCard

MANIFEST = "manifest.json"
CARD = "model_card.json"
TRACKED_LIBRARIES = ("medsight", "torch", "monai", "numpy", "scipy", "scikit-learn", "pydicom", "SimpleITK",
                     "nibabel")
_UNHASHED = ("id", "registered_at")


@dataclass(frozen=True)
class ModelRecord:
    """One registered model version."""

    name: str
    version: str
    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def card(self) -> ModelCard:
        return ModelCard.from_json((self.path / CARD).read_text())

    @property
    def files(self) -> dict[str, str]:
        return dict(self.manifest.get("files", {}))


def default_root() -> Path:
    """$MEDSIGHT_HOME/models, default ~/.medsight/models."""
    return Path(os.environ.get("MEDSIGHT_HOME") or Path.home() / ".medsight") / "models"


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a model's behaviour depends on (no imports: fast)."""
    out = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the medsight checkout (or ``path``), with "-dirty" when it has uncommitted changes."""
    where = path or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def manifest_id(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k not in _UNHASHED}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _hash_tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _check_name(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\\" in value or value.startswith("."):
        raise ConfigError(f"invalid model {what} {value!r}: use letters, digits, '-', '_' or '.'")
    return value


def register_model(src_dir: str | Path, name: str, card: ModelCard, metadata: dict[str, Any] | None = None,
                   root: str | Path | None = None) -> ModelRecord:
    """Copy ``src_dir`` into the registry as a new version of ``name`` with its card and a hashed manifest.

    ``metadata`` may hold ``version`` (else the content hash names the version), ``data_manifest_hash``,
    ``git_commit`` (else detected), metrics, thresholds... anything JSON-serialisable. Registering identical
    content twice returns the existing record.
    """
    src = Path(src_dir)
    if not src.is_dir() or not any(src.iterdir()):
        raise InputNotFoundError("model folder not found or empty", src)
    _check_name(name, "name")
    meta = dict(metadata or {})
    root = Path(root) if root else default_root()
    (root / name).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root / name))
    try:
        shutil.copytree(src, staging, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(MANIFEST, CARD, "__pycache__", ".*"))
        card_dict = card.to_dict() if isinstance(card, ModelCard) else ModelCard.from_dict(card).to_dict()
        atomic_write_text(staging / CARD, json.dumps(card_dict, indent=2, sort_keys=True, default=str))
        manifest: dict[str, Any] = {
            "name": name,
            "files": _hash_tree(staging),
            "library_versions": meta.pop("library_versions", None) or library_versions(),
            "git_commit": meta.pop("git_commit", None) or git_commit(),
            "data_manifest_hash": meta.pop("data_manifest_hash", None),
            "metadata": meta,
        }
        model_id = manifest_id(manifest)
        version = _check_name(str(meta.get("version") or model_id[:12]), "version")
        manifest.update(version=version)
        model_id = manifest_id(manifest)
        manifest.update(id=model_id, registered_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        target = root / name / version
        if target.exists():
            existing = get_model(name, version, root=root)
            if existing.id == model_id:
                return existing
            raise ConfigError(f"model {name} version {version} already exists with different content "
                              f"(id {existing.id[:12]}); choose another version")
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ModelRecord(name, version, model_id, target, manifest)


def _load(path: Path) -> ModelRecord:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise IntegrityError("manifest.json is missing: not a registered model version", path) from None
    except json.JSONDecodeError as err:
        raise IntegrityError(f"manifest.json is not valid JSON ({err.msg})", path) from err
    return ModelRecord(manifest.get("name", path.parent.name), manifest.get("version", path.name),
                       manifest.get("id", ""), path, manifest)


def list_models(root: str | Path | None = None) -> list[ModelRecord]:
    """Every registered version, sorted by name then registration time."""
    root = Path(root) if root else default_root()
    out = []
    if root.is_dir():
        for path in sorted(root.glob("*/*/" + MANIFEST)):
            if not path.parent.name.startswith("."):
                out.append(_load(path.parent))
    return sorted(out, key=lambda r: (r.name, r.manifest.get("registered_at", ""), r.version))


def get_model(name: str, version: str | None = None, root: str | Path | None = None) -> ModelRecord:
    """One version of ``name`` (the latest registered when ``version`` is None); ``name`` may also be an id prefix."""
    records = list_models(root)
    matches = [r for r in records if r.name == name and (version is None or r.version == version)]
    if not matches and version is None and len(name) >= 6:
        matches = [r for r in records if r.id.startswith(name)]
    if not matches:
        known = ", ".join(sorted({f"{r.name}/{r.version}" for r in records})) or "none"
        wanted = f"{name}/{version}" if version else name
        raise InputNotFoundError(f"no registered model {wanted} (registered: {known}); see `medsight models list`")
    return matches[-1]


def verify_model(name_or_record: str | ModelRecord, version: str | None = None,
                 root: str | Path | None = None) -> ModelRecord:
    """Recompute every hash; raise IntegrityError naming the altered, missing or unexpected file."""
    rec = name_or_record if isinstance(name_or_record, ModelRecord) else get_model(name_or_record, version, root)
    label = f"model {rec.name}/{rec.version}"
    recorded: dict[str, str] = rec.manifest.get("files", {})
    if manifest_id(rec.manifest) != rec.id:
        raise IntegrityError(f"{label}: manifest.json was edited (its hash no longer matches id {rec.id[:12]})",
                             rec.path / MANIFEST)
    for rel, digest in sorted(recorded.items()):
        path = rec.path / rel
        if not path.is_file():
            raise IntegrityError(f"{label}: file {rel} is missing", path)
        if sha256_file(path) != digest:
            raise IntegrityError(f"{label}: file {rel} was altered (sha256 differs from the manifest)", path)
    extra = sorted(set(_hash_tree(rec.path)) - set(recorded))
    if extra:
        raise IntegrityError(f"{label}: unexpected file {extra[0]} not in the manifest", rec.path / extra[0])
    return rec
