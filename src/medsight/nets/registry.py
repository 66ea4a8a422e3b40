"""Plug-in registries filled from Python entry points: a user's installed package adds a network without a fork.

Groups and what a factory (the entry point's ``module:function``) is called with:

- ``medsight.networks``  ``f(cfg: ConfigPlan, in_channels, out_channels) -> nn.Module`` (segmentation)
- ``medsight.backbones`` ``f(spatial_dims, in_channels, input_size) -> (nn.Module, grad_cam_layer)``
- ``medsight.mil``       slide-level aggregators; ``medsight.encoders`` patch feature encoders
- ``medsight.losses``    ``f(**options) -> nn.Module``

medsight's own networks are declared the same way in its pyproject.toml. When medsight runs from a source tree
that was never installed, those declarations are read from the pyproject.toml beside ``src/``.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Callable

from medsight import __version__
from medsight.errors import ConfigError

GROUPS = ("medsight.networks", "medsight.backbones", "medsight.mil", "medsight.encoders", "medsight.losses")
KIND = {"medsight.networks": "network", "medsight.backbones": "backbone", "medsight.mil": "MIL aggregator",
        "medsight.encoders": "encoder", "medsight.losses": "loss"}
_PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


@functools.cache
def _entries(group: str) -> dict[str, tuple[str, str, str]]:
    """name -> (value "module:attr", distribution, version); installed plug-ins win over source declarations."""
    if group not in GROUPS:
        raise ConfigError(f"unknown plug-in group {group!r}; use one of {', '.join(GROUPS)}")
    found: dict[str, tuple[str, str, str]] = {}
    for name, value in _source_declarations().get(group, {}).items():
        found[name] = (value, "medsight", __version__)
    for ep in entry_points(group=group):
        found[ep.name] = (ep.value, *_dist_of(ep))
    return found


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return str(dist.metadata["Name"]), str(dist.version)


@functools.cache
def _source_declarations() -> dict[str, dict[str, str]]:
    """medsight's own entry points from the pyproject.toml of a source checkout (empty for a wheel install)."""
    if not _PYPROJECT.is_file():
        return {}
    data = tomllib.loads(_PYPROJECT.read_text())
    if data.get("project", {}).get("name") != "medsight":
        return {}
    eps = data["project"].get("entry-points", {})
    return {g: dict(v) for g, v in eps.items() if g in GROUPS}


def refresh() -> None:
    """Forget the cached lists (after installing a plug-in into the running interpreter's path)."""
    _entries.cache_clear()


def available(group: str) -> list[str]:
    """The registered names of ``group``, sorted."""
    return sorted(_entries(group))


def load(group: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; ConfigError (one line) when it is not installed or cannot import."""
    entries = _entries(group)
    if name not in entries:
        raise ConfigError(f"unknown {KIND[group]} {name!r}; available: {', '.join(sorted(entries)) or 'none'}. If it "
                          f"comes from a plug-in, install the package that registers it under '{group}'")
    value, dist, version = entries[name]
    module, _, attr = value.partition(":")
    try:
        obj: Any = import_module(module.strip())
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{group} entry {name!r} of {dist} {version} points to {value!r}, which cannot be "
                          f"loaded ({exc}); reinstall {dist}") from exc
    return obj


def provenance(group: str, name: str) -> dict[str, str]:
    """{"name", "distribution", "version"} of the installed package that provides ``name``."""
    entries = _entries(group)
    if name not in entries:
        load(group, name)  # raises the one-line error
    _, dist, version = entries[name]
    return {"name": name, "distribution": dist, "version": version}


def require(group: str, recorded: dict[str, str] | None, name: str) -> Callable[..., Any]:
    """Load the factory a saved model was trained with; a one-line error naming the missing distribution."""
    if name in _entries(group) or not recorded or recorded.get("distribution") in (None, "medsight"):
        return load(group, name)
    raise ConfigError(f"this model needs {KIND[group]} {name!r} from the plug-in "
                      f"{recorded['distribution']} {recorded.get('version', '')}, which is not installed; "
                      f"pip install '{recorded['distribution']}=={recorded.get('version', '')}'")
