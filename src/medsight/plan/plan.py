"""The Plan: every choice training and inference make, as a versioned JSON document with a content hash.

A plan is data, not code: it can be read, diffed and edited by hand, and the hash recorded in every model says
exactly which plan made it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medsight.errors import ConfigError, InputNotFoundError
from medsight.files import atomic_write_text

PLAN_VERSION = 1


@dataclass
class ConfigPlan:
    """One trainable configuration (2d or 3d): grid, patch, batch, network and schedule."""

    name: str
    spatial_dims: int
    spacing: list[float]
    median_shape: list[int]
    patch_size: list[int]
    batch_size: int
    network: str = "dynunet"
    filters: list[int] = field(default_factory=list)
    kernels: list[list[int]] = field(default_factory=list)
    strides: list[list[int]] = field(default_factory=list)
    deep_supervision: bool = True
    epochs: int = 100
    iterations_per_epoch: int = 50
    optimizer: str = "adamw"
    learning_rate: float = 3e-3
    weight_decay: float = 3e-5
    foreground_oversample: float = 0.33
    class_sampling: dict[str, float] = field(default_factory=dict)  # label -> share of foreground-forced patches
    loss: str = "dice_ce"  # a segmentation loss of the medsight.losses registry: "dice_ce" or "dice_balanced_ce"
    context_slices: int = 0  # 2.5D: this many neighbouring slices on each side become extra input channels
    mirror_axes: list[int] = field(default_factory=list)
    estimated_memory_gb: float = 0.0
    reasons: list[str] = field(default_factory=list)


@dataclass
class Plan:
    dataset: str
    fingerprint_sha256: str
    channels: dict[str, str]
    labels: dict[str, int]
    normalisation: dict[str, dict[str, Any]]  # channel -> scheme and its parameters
    target_spacing: list[float]
    configurations: dict[str, ConfigPlan]
    memory_gb: float
    reasons: list[str] = field(default_factory=list)
    version: int = PLAN_VERSION
    # lesion post-processing and measurement: lesion_labels {value: name}, min_lesion_volume_ml, referral defaults
    postprocess: dict[str, Any] = field(default_factory=dict)
    default_configuration: str = "3d"

    def config(self, name: str) -> ConfigPlan:
        if name not in self.configurations:
            raise ConfigError(f"the plan has no '{name}' configuration; it has {', '.join(self.configurations)}")
        return self.configurations[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        if int(d.get("version", 0)) != PLAN_VERSION:
            raise ConfigError(f"plan version {d.get('version')} is not {PLAN_VERSION}; re-run `medsight plan`")
        d = dict(d)
        d["configurations"] = {k: ConfigPlan(**v) for k, v in d["configurations"].items()}
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError("no plan JSON here; run `medsight plan DATASET` first", path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"not a valid medsight plan ({type(exc).__name__}: {exc})", path) from exc
