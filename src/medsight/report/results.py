"""The results document behind the validation report: plain, versioned JSON (schema in docs/report.md).

Why a document and not objects: the renderer, the tests and any outside tool read the same file, and a report
can be re-rendered without re-running the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medsight.errors import ConfigError, InputNotFoundError
from medsight.files import atomic_write_text

SCHEMA = "medsight.validation-results"
SCHEMA_VERSION = 1


def cell(value: float | None, lo: float | None = None, hi: float | None = None) -> dict[str, float | None]:
    """One reported number with its confidence interval; NaN becomes None (strict JSON null)."""
    return {"value": _finite(value), "lo": _finite(lo), "hi": _finite(hi)}


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def clean(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into JSON types and non-finite floats into None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return clean(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class ValidationResults:
    """Top level of the results document. ``classification`` / ``segmentation`` are None when not evaluated."""

    title: str
    created: str
    min_cases: int
    model: dict[str, Any] = field(default_factory=dict)  # name, task, dir, hashes {file: sha256}, versions
    data: dict[str, Any] = field(default_factory=dict)  # dataset, manifest_sha256, n_cases, internal, external
    classification: dict[str, Any] | None = None
    segmentation: dict[str, Any] | None = None
    worst_cases: list[dict[str, Any]] = field(default_factory=list)
    model_card: dict[str, Any] | None = None
    model_cards: list[dict[str, Any]] = field(default_factory=list)  # one generated card per validated model
    federated: dict[str, Any] | None = None  # per-site, per-round view of a federated package (report/federated.py)
    notes: list[str] = field(default_factory=list)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def write(self, path: str | Path) -> Path:
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> ValidationResults:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ConfigError(f"{source} is not a medsight validation results document (schema {SCHEMA!r})")
        if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ConfigError(f"{source} has schema_version {data['schema_version']}; this medsight reads up to "
                              f"{SCHEMA_VERSION}: upgrade medsight")
        known = set(cls.__dataclass_fields__)
        missing = {"title", "created", "min_cases"} - set(data)
        if missing:
            raise ConfigError(f"{source} lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: str | Path) -> ValidationResults:
        p = Path(path)
        if not p.is_file():
            raise InputNotFoundError(f"results file {p} not found; run `medsight validate` first", p)
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p} is not valid JSON ({err.msg} at line {err.lineno})", p) from err
        return cls.from_dict(data, str(p))


def resolve(doc: dict[str, Any], path: str) -> Any:
    """Value at a dotted path ("classification.cohorts.0.auc.value"); list indices are integers."""
    node: Any = doc
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node
