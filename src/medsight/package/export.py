"""ONNX export of a package's network, with the preprocessing it expects written beside it as JSON.

Why: an edge device (a scanner console, a hospital PC without Python) runs ONNX models with onnxruntime. The
network alone is not the model, so ``OUT.json`` carries what must happen around it (input size, normalisation,
labels, activation, thresholds, calibration, and for segmentation the patch size and sliding-window settings)
and the package id it came from. The exporter is PyTorch's TorchScript-based one (``dynamo=False``): the new
``torch.export`` path needs ``onnxscript``, which we do not install.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.files import atomic_path, atomic_write_text, sha256_file

OPSET = 17


def metadata_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name.removesuffix(".onnx") + ".json")


class _FirstOutput(nn.Module):
    """Networks that return a list/tuple in eval mode (deep supervision heads) export their first output."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return y[0] if isinstance(y, (list, tuple)) else y


def export_onnx(model: nn.Module, example: torch.Tensor, out_path: str | Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``out_path`` (ONNX, batch axis dynamic) and its metadata JSON atomically; returns the metadata."""
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ConfigError(f"the export file must end in .onnx, got {out_path.name}")
    net = _FirstOutput(model).eval()
    with atomic_path(out_path, suffix=".onnx") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes say nothing to a user
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=OPSET)
    meta = {**metadata, "onnx": {"file": out_path.name, "sha256": sha256_file(out_path), "opset": OPSET,
                                 "input": {"name": "input", "shape": ["batch", *example.shape[1:]],
                                           "dtype": "float32"},
                                 "output": {"name": "output"}, "torch": torch.__version__}}
    atomic_write_text(metadata_path(out_path), json.dumps(meta, indent=2, sort_keys=True, default=str))
    return meta


def onnx_session(path: str | Path, threads: int | None = None):  # noqa: ANN201 - onnxruntime.InferenceSession
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def max_difference(model: nn.Module, onnx_path: str | Path, inputs: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between PyTorch's and onnxruntime's outputs over ``inputs``."""
    session = onnx_session(onnx_path)
    net = _FirstOutput(model).eval()
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = net(x).numpy()
            got = session.run(None, {"input": x.numpy().astype(np.float32)})[0]
            if got.shape != ref.shape:
                raise ConfigError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
            worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def quantize_int8(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Dynamic int8 quantisation of weights (onnxruntime.quantization); activations stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(out_path, suffix=".onnx") as tmp:
        quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
    return Path(out_path)
