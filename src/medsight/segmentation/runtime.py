"""Which engine runs a segmentation network's forward passes: PyTorch or ONNX Runtime.

ONNX Runtime is faster on CPU for the planner's networks (docs/benchmarks.md "export": 1.6x for the planner's
DynUNet; "predict": 2.6x on a CT-sized volume). ``choose_runtime`` exports the loaded network to ONNX in memory
(package/export.py's exporter), runs both engines on the same window batch, and ("auto") picks ONNX Runtime when
its logits equal PyTorch's within ``TOLERANCE``; otherwise PyTorch. The choice does not depend on a timing taken at
start-up: a timing under load would pick different engines in two runs of the same command, and a rerun after a
kill must give the same output as an uninterrupted run. Where ONNX Runtime is slower, ``--runtime torch`` says so.
The record says what was measured, so a prediction's provenance records it.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.errors import ConfigError

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # largest absolute logit difference accepted between the engines
RUNTIMES = ("auto", "torch", "onnx")


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def torch_forward(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _first(net(x))
    return fn


def onnx_forward(net: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network exported to ONNX (in memory, batch axis dynamic) and run by ONNX Runtime."""
    import onnxruntime as ort

    from medsight.package.export import OPSET, _FirstOutput

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_FirstOutput(net).eval(), (example,), buf, dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=OPSET)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": x.detach().numpy().astype(np.float32, copy=False)})[0])
    return fn


def choose_runtime(net: nn.Module, example: torch.Tensor, runtime: str = "auto") -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """A forward function for ``net`` (logits) and a record of the choice (engine, max difference, timings)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    ref = torch_forward(net)
    if runtime == "torch":
        return ref, {"runtime": "torch", "reason": "asked for"}
    try:
        ort_fn = onnx_forward(net, example)
        diff = float((ort_fn(example) - ref(example)).abs().max())
    except Exception as err:  # noqa: BLE001 - an export or runtime failure falls back to PyTorch, with the reason
        if runtime == "onnx":
            raise ConfigError(f"this network does not run under ONNX Runtime ({str(err).splitlines()[0]}); "
                              "use --runtime torch") from err
        return ref, {"runtime": "torch", "reason": f"ONNX export or run failed: {str(err).splitlines()[0]}"}
    if runtime == "onnx":
        return ort_fn, {"runtime": "onnx", "reason": "asked for", "max_abs_diff": diff}
    record = {"max_abs_diff": diff, "tolerance": TOLERANCE, "batch": int(example.shape[0])}
    if diff <= TOLERANCE:
        return ort_fn, {"runtime": "onnx", "reason": "equal within tolerance (measured faster: docs/benchmarks.md)",
                        **record}
    log.info("segmentation runtime: torch (logits differ beyond tolerance: %.2g)", diff)
    return ref, {"runtime": "torch", "reason": "logits differ beyond tolerance", **record}
