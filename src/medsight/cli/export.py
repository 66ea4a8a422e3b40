"""``medsight export PACKAGE OUT.onnx``: the package's network as ONNX for onnxruntime, with its preprocessing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from medsight.cli.audited import audited, current_event


def classifier_for_export(pkg: Any) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    """The classifier network, an example input and what must happen around it (outputs are raw logits)."""
    from medsight.classification.model_io import load_classifier

    bundle = load_classifier(pkg)
    cfg = bundle.config
    cal = bundle.calibration.to_dict() if bundle.calibration is not None else None
    meta = {"task": "classification", "labels": bundle.labels, "activation": cfg["activation"],
            "input_size": cfg["input_size"], "normalisation": cfg.get("normalisation"),
            "thresholds": bundle.thresholds, "calibration": cal,
            "output_is": "raw logits: divide by the calibration temperature (if any), then apply the activation, "
                         "then compare with the thresholds"}
    return bundle.model, torch.zeros(1, cfg.get("in_channels", 1), *cfg["input_size"]), meta


def segmenter_for_export(pkg: Any, fold: str | None) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    """One fold's segmentation network on one patch; sliding window, mirroring and fold averaging stay outside."""
    from medsight.segmentation.ensemble import available_folds, load_models

    folds = available_folds(pkg.path)
    chosen = fold if fold is not None else (folds[0] if folds else None)
    plan, cfg, nets = load_models(pkg.path, [chosen] if chosen is not None else None)
    patch = list(cfg.patch_size)
    example = torch.zeros(1, len(plan.channels), *patch)
    meta = {"task": "segmentation", "fold": chosen, "folds_in_package": folds, "labels": plan.labels,
            "channels": plan.channels, "patch_size": patch, "spatial_dims": cfg.spatial_dims,
            "plan": json.loads(pkg.file("plan.json").read_text()),
            "output_is": "per-class logits of one patch: softmax over axis 1; predict whole images with a sliding "
                         "window of patch_size (50% overlap, Gaussian weights) after the plan's resampling and "
                         "normalisation, as `medsight predict` does"}
    return nets[0], example, meta


@click.command("export")
@click.argument("package", metavar="PACKAGE")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--fold", default=None, help="Segmentation: which fold's network (default: the first).")
@click.option("--int8", "int8", is_flag=True, help="Also write OUT.int8.onnx with dynamic int8 weight quantisation.")
@click.option("--allow-retired", is_flag=True, help="Export a model the registry marks retired.")
@audited("export", outputs=("out",))
def export(package: str, out: Path, fold: str | None, int8: bool, allow_retired: bool) -> None:
    """Write PACKAGE's network (a package folder or registered NAME[@VERSION]) as OUT.onnx plus OUT.json.

    OUT.json holds the preprocessing, labels, thresholds, calibration and the package id. The export is checked
    before this returns: onnxruntime must reproduce PyTorch's outputs within 1e-4 on a test input.
    """
    from medsight.errors import ConfigError
    from medsight.package.export import export_onnx, max_difference, quantize_int8
    from medsight.package.package import load_package

    pkg = load_package(package, allow_retired=allow_retired)
    current_event().package(pkg)
    if pkg.task == "classification":
        model, example, meta = classifier_for_export(pkg)
    elif pkg.task == "segmentation":
        model, example, meta = segmenter_for_export(pkg, fold)
    else:
        raise ConfigError(f"export supports classification and segmentation packages, not {pkg.task}")
    meta.update(package_id=pkg.id, package_name=pkg.name, package_version=pkg.version)
    export_onnx(model, example, out, meta)
    probe = torch.randn(2, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    diff = max_difference(model, out, [probe])
    if diff > 1e-4:
        out.unlink(missing_ok=True)
        raise ConfigError(f"onnxruntime's output differs from PyTorch's by {diff:.2e} (> 1e-4); export refused")
    click.echo(f"{out}  (max |onnx - torch| = {diff:.1e} on a test input; preprocessing in "
               f"{out.with_name(out.name.removesuffix('.onnx') + '.json').name})")
    if int8:
        q = quantize_int8(out, out.with_name(out.name.removesuffix(".onnx") + ".int8.onnx"))
        current_event().outputs([q])
        click.echo(f"{q}  (int8 weights; check its accuracy before use)")
