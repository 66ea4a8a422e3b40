"""Segment images with a trained model folder: preprocess as in training, sliding window per fold (windows in
batches, at the window overlap and with the flips the package measured as worth their cost, ONNX Runtime
where it is equal and faster), average folds, resample back onto the input grid, and write NIfTI label maps
(plus probabilities/entropy).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medsight.data.preprocess import preprocess_image
from medsight.errors import ConfigError
from medsight.image import Image
from medsight.plan.plan import ConfigPlan
from medsight.segmentation.ensemble import average, load_models
from medsight.segmentation.lesion_detection import apply_detection, load_detection
from medsight.segmentation.lesions import LesionTable, load_policy, measure_lesions, write_lesion_table
from medsight.segmentation.sampling import slice_stack
from medsight.segmentation.postprocess import entropy, labels_from_probabilities, to_input_grid
from medsight.segmentation.sliding import sliding_window, timed_predictor
from medsight.segmentation.runtime import choose_runtime
from medsight.segmentation.tta import INFERENCE_FILE, mirror_combinations, mirrored_softmax
from medsight.io.nifti import write_nifti

log = logging.getLogger(__name__)
WINDOW_BATCH = 4  # sliding windows per network call
DEFAULT_OVERLAP = 0.5  # window overlap when the package records none or the user chose the mirroring (nnU-Net's)


@dataclass
class Prediction:
    labels: Image
    probabilities: np.ndarray  # (C, *S) on the input grid
    seconds: float
    network_seconds: float
    info: dict = field(default_factory=dict)
    lesions: LesionTable | None = None  # measured lesions when the plan names lesion labels

    def entropy(self) -> Image:
        return Image(entropy(self.probabilities), self.labels.geometry,
                     self.labels.provenance.with_step("entropy_map", unit="nats"))


def recorded_mirror_axes(model_dir: str | Path) -> tuple[list[int], str]:
    """The mirror axes the package chose by measurement (``inference.json``), and where the choice came from.

    A package trained before the measurement existed records none: it predicts without mirroring (the fast
    default); ``--mirror-axes`` asks for any axes explicitly."""
    recorded = _inference(model_dir)
    if recorded is not None:
        return [int(a) for a in recorded.get("mirror_axes", [])], "measured at training"
    return [], "none recorded in the package"


def _inference(model_dir: str | Path) -> dict | None:
    """The package's ``inference.json`` (its measured choice of overlap and flips), None when it has none."""
    path = Path(model_dir) / INFERENCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def recorded_flips(model_dir: str | Path) -> list[tuple[int, ...]] | None:
    """The set of flips the package chose (``inference.json`` ``flips``, the identity among them); None for a
    package that records mirror axes only (it runs every combination of those axes, as before flip sets)."""
    flips = (_inference(model_dir) or {}).get("flips")
    return None if flips is None else [tuple(int(a) for a in f) for f in flips]


def recorded_overlap(model_dir: str | Path) -> float | None:
    """The sliding-window overlap the package chose together with its mirror axes (segmentation/tta_study.py);
    None for a package whose inference.json predates the overlap study (or has none): predict uses 0.5."""
    value = (_inference(model_dir) or {}).get("overlap")
    return None if value is None else float(value)


class Predictor:
    """Holds the loaded models so that many images are predicted without reloading.

    ``mirror_axes=None`` uses the flips the package measured as worth their passes (``recorded_flips``; packages
    without them: every combination of ``recorded_mirror_axes``), explicit axes every combination of those;
    ``flips`` runs exactly those flips; ``mirror=False`` turns mirroring off; ``overlap=None`` takes the overlap the package chose with its axes
    (``recorded_overlap``) when the axes are the package's too, else 0.5; an explicit overlap always wins;
    ``runtime`` is "auto" (ONNX Runtime when equal within 1e-4 and faster on this machine, else PyTorch), "torch"
    or "onnx"."""

    def __init__(self, model_dir: str | Path, folds: list[str] | None = None, mirror: bool = True,
                 mirror_axes: list[int] | str | None = None, overlap: float | None = None, network: str | None = None,
                 runtime: str = "torch", window_batch: int | None = None,
                 flips: Sequence[Sequence[int]] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.plan, self.cfg, self.models = load_models(model_dir, folds, network=network)
        explicit = flips is not None
        if explicit:  # an explicit set of flips (benchmarks: a study candidate), overlap 0.5 unless given
            flips = [tuple(int(a) for a in f) for f in flips]
            axes, self.mirror_source = sorted({a for f in flips for a in f}), "asked for (flips)"
        elif mirror_axes is None:
            axes, self.mirror_source = recorded_mirror_axes(self.model_dir)
            flips = recorded_flips(self.model_dir)
            axes = sorted({a for f in flips for a in f}) if flips is not None else axes
        elif mirror_axes == "all":
            axes, self.mirror_source = list(self.cfg.mirror_axes), "asked for (every plan axis)"
        else:
            axes, self.mirror_source = list(mirror_axes), "asked for"
        bad = [a for a in axes if a not in self.cfg.mirror_axes]
        if bad:
            raise ConfigError(f"mirror axes {bad} are not axes of this plan (its axes: {self.cfg.mirror_axes})")
        self.mirror_axes = list(axes) if mirror else []
        # one network call per flip of each window batch (the identity first, as mirror_combinations lists it)
        self.flips = (flips if mirror and flips is not None else mirror_combinations(self.mirror_axes))
        if not mirror:
            self.mirror_source = "turned off"
        recorded = recorded_overlap(self.model_dir) if mirror and mirror_axes is None and not explicit else None
        if overlap is not None:
            self.overlap, self.overlap_source = float(overlap), "asked for"
        elif recorded is not None:
            self.overlap, self.overlap_source = recorded, "measured at training"
        else:
            self.overlap, self.overlap_source = DEFAULT_OVERLAP, "default"
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"window overlap must lie in [0, 1), got {self.overlap}")
        self.lesion_policy = load_policy(self.model_dir, self.plan.postprocess)
        self.lesion_detection = load_detection(self.model_dir)  # None: argmax and the plan's minimum volume
        channels = len(self.plan.channels) * (2 * self.cfg.context_slices + 1 if self.cfg.spatial_dims == 2 else 1)
        example = torch.randn(window_batch or WINDOW_BATCH, channels,  # one flip of the window batch per call
                              *self.cfg.patch_size,
                              generator=torch.Generator().manual_seed(0))
        chosen = [choose_runtime(net, example, runtime) for net in self.models]
        self.forwards = [c[0] for c in chosen]
        self.runtime = chosen[0][1]
        # batching windows pays under PyTorch (fewer, larger calls); ONNX Runtime measured no faster with it
        self.window_batch = window_batch or (1 if self.runtime["runtime"] == "onnx" else WINDOW_BATCH)

    def predict(self, image: Image | list[Image]) -> Prediction:
        t0 = time.perf_counter()
        pre = preprocess_image(image, self.plan, self.cfg)
        prob, net_seconds = plan_grid_probabilities(self.forwards, pre.image, self.cfg, self.mirror_axes, self.overlap,
                                                    combos=self.flips, window_batch=self.window_batch)
        prob_in = to_input_grid(prob.numpy(), pre.original_shape)
        first = image[0] if isinstance(image, list) else image
        label_array, lesions = labels_from_probabilities(prob_in), None
        post = self.plan.postprocess
        min_ml, rule = float(post.get("min_lesion_volume_ml", 0.0)), self.lesion_detection
        if post.get("lesion_labels"):
            lesion_labels = {int(k): v for k, v in post["lesion_labels"].items()}
            if rule is not None:  # the detection rule fitted on validation lesions (lesion_detection.json)
                label_array = apply_detection(prob_in, lesion_labels, rule, float(np.prod(first.spacing)) / 1000.0)
                min_ml = rule.min_volume_ml
            label_array, lesions = measure_lesions(label_array, prob_in, first.geometry, lesion_labels, min_ml,
                                                   self.lesion_policy)
        labels = Image(label_array, first.geometry, first.provenance.with_step(
            "medsight_segmentation", model_dir=str(self.model_dir), plan_sha256=self.plan.sha256(),
            folds=len(self.models), mirror_axes=self.mirror_axes, flips=[list(f) for f in self.flips],
            mirror_source=self.mirror_source,
            overlap=self.overlap, overlap_source=self.overlap_source,
            runtime=self.runtime["runtime"], min_lesion_volume_ml=min_ml,
            lesion_detection=None if rule is None else {"threshold": rule.threshold, "min_score": rule.min_score}))
        return Prediction(labels, prob_in, time.perf_counter() - t0, net_seconds,
                          {"folds": len(self.models), "mirror_axes": self.mirror_axes,
                           "flips": [list(f) for f in self.flips],
                           "mirror_source": self.mirror_source, "overlap": self.overlap,
                           "overlap_source": self.overlap_source, "runtime": self.runtime,
                           **({"lesions": lesions.summary()} if lesions is not None else {})}, lesions)


def plan_grid_probabilities(models: Sequence[torch.nn.Module | Callable[[torch.Tensor], torch.Tensor]],
                            image: np.ndarray, cfg: ConfigPlan, mirror_axes: list[int], overlap: float = 0.5,
                            combos: list[tuple[int, ...]] | None = None,
                            window_batch: int = WINDOW_BATCH) -> tuple[torch.Tensor, float]:
    """Softmax (C, *S) of a preprocessed (C, *S) image on the plan's grid, averaged over ``models`` (networks or
    forward functions), and the seconds spent in the networks. 2D configurations run slice by slice (with
    neighbours as channels for 2.5D), exactly as they were trained; the federated sites' evaluation uses this too.
    ``combos`` replaces the flip combinations of ``mirror_axes`` (the mirror study predicts one at a time)."""
    x = torch.from_numpy(image)[None]  # (1, C, *S)
    if cfg.spatial_dims == 2:  # slices along the last axis become the batch
        x = x[0].permute(3, 0, 1, 2)
        if cfg.context_slices:  # 2.5D: each slice with its neighbours as channels, as in training
            x = slice_stack(x, cfg.context_slices)
    probs, net_seconds = [], 0.0
    for net in models:
        timed_net = timed_predictor(net)  # only the network's forward passes count as network time
        p = sliding_window(x, lambda patch, n=timed_net: mirrored_softmax(n, patch, mirror_axes, combos),
                           cfg.patch_size, overlap, sw_batch_size=window_batch)
        net_seconds += timed_net.seconds
        probs.append(p)
    prob = average(probs)
    return (prob.permute(1, 2, 3, 0) if cfg.spatial_dims == 2 else prob[0]), net_seconds


def write_prediction(pred: Prediction, out_path: str | Path, probabilities: bool = False,
                     uncertainty: bool = False) -> dict[str, Path]:
    """Write the label map (uint8, input geometry), ``{stem}_lesions.csv`` when the plan names lesion labels, and,
    on request, probability and entropy maps beside it."""
    out_path = Path(out_path)
    written = {"labels": write_nifti(pred.labels, out_path, dtype=np.uint8)}
    stem = out_path.name[: -len(".nii.gz")] if out_path.name.endswith(".nii.gz") else out_path.stem
    if probabilities:
        prob = Image(np.moveaxis(pred.probabilities, 0, -1).astype(np.float32), pred.labels.geometry,
                     pred.labels.provenance.with_step("class_probabilities"))
        written["probabilities"] = write_nifti(prob, out_path.with_name(stem + "_probabilities.nii.gz"))
    if pred.lesions is not None:
        written["lesions"] = write_lesion_table(pred.lesions, out_path.with_name(stem + "_lesions.csv"))
    if uncertainty:
        written["entropy"] = write_nifti(pred.entropy(), out_path.with_name(stem + "_entropy.nii.gz"))
    return written
