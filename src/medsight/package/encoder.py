"""Encoder packages: pretrained weights as a verified package of kind ``encoder``, and initialising a network
from one.

An encoder package holds ``encoder.pt`` (a state dict: parameter name -> tensor, read with ``weights_only``),
``encoder.json`` (how it was pretrained and the network configuration it fits) and whatever the writer adds
(plan, log, energy). It is loaded only through ``load_package`` (every hash verified), so a tampered file is
refused before any weight reaches a model. Fitting is strict: every tensor of the package must exist in the new
network with the same shape, otherwise one line says which tensor does not fit and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.package.manifest import PackageError
from medsight.package.package import Package, load_package

WEIGHTS = "encoder.pt"
DESCRIPTION = "encoder.json"


def load_encoder_package(ref: str | Path, registry_url: str | None = None
                         ) -> tuple[Package, dict[str, torch.Tensor], dict[str, Any]]:
    """(package, state dict, description) of a verified encoder package; PackageError for anything else."""
    pkg = load_package(ref, registry_url=registry_url)
    if pkg.task != "encoder":
        raise PackageError(f"package {pkg.label} is a {pkg.task} model, not an encoder package; pass the output "
                           "of `medsight pretrain`", pkg.path)
    desc = pkg.read_json(DESCRIPTION)
    try:
        state = torch.load(str(pkg.file(WEIGHTS)), map_location="cpu", weights_only=True)
    except Exception as exc:  # verified bytes that torch cannot read: written by something else
        raise PackageError(f"{WEIGHTS} of {pkg.label} cannot be read ({type(exc).__name__})", pkg.path) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PackageError(f"{WEIGHTS} of {pkg.label} is not a state dict of tensors", pkg.path)
    return pkg, state, desc


def check_fit(model: nn.Module, state: dict[str, torch.Tensor], label: str) -> None:
    """Refuse (one line) unless every tensor of ``state`` exists in ``model`` with the same shape."""
    own = model.state_dict()
    for key, tensor in state.items():
        if key not in own:
            raise ConfigError(f"encoder package {label} does not fit this network: it has no tensor {key!r} "
                              f"({type(model).__name__}); pretrain with the same network and plan configuration")
        if tuple(own[key].shape) != tuple(tensor.shape):
            raise ConfigError(f"encoder package {label} does not fit this network: {key} is "
                              f"{tuple(tensor.shape)} in the package, {tuple(own[key].shape)} here; pretrain with "
                              "the same plan configuration (filters, kernels, channels)")


def apply_encoder(model: nn.Module, pkg: Package, state: dict[str, torch.Tensor], desc: dict[str, Any],
                  network: str | None = None) -> dict[str, Any]:
    """Copy a loaded encoder package's tensors into ``model`` (in place); returns the provenance to record."""
    fits = desc.get("network")
    if network is not None and fits is not None and fits != network:
        raise ConfigError(f"encoder package {pkg.label} was pretrained for network {fits!r}, this model is "
                          f"{network!r}; pretrain for {network!r} or train with --network {fits}")
    check_fit(model, state, pkg.label)
    with torch.no_grad():
        own = model.state_dict()
        for key, tensor in state.items():
            own[key].copy_(tensor.to(own[key].dtype))
    return encoder_provenance(pkg, desc, len(state))


def init_from_encoder(model: nn.Module, ref: str | Path, network: str | None = None,
                      registry_url: str | None = None) -> dict[str, Any]:
    """Verify the encoder package ``ref`` and initialise ``model`` from it (see ``apply_encoder``)."""
    pkg, state, desc = load_encoder_package(ref, registry_url)
    return apply_encoder(model, pkg, state, desc, network)


def encoder_provenance(pkg: Package, desc: dict[str, Any], n_tensors: int) -> dict[str, Any]:
    """What a model initialised from ``pkg`` records in its summary, manifest and card."""
    return {"package_id": pkg.id, "name": pkg.name, "version": pkg.version, "method": desc.get("method"),
            "network": desc.get("network"), "parts": desc.get("parts"), "tensors": n_tensors,
            "pretrained_on": desc.get("data", {}).get("volumes")}
