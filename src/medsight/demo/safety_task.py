"""The classification task the safety layer is evaluated on: which model, which images, which OOD sets.

``build_safety_task`` prefers the project classifier and its demo slices; where those are not available it falls
back to ``reference_task`` (and says so in ``source``). Both produce the same sets:
training / validation / held-out test of the training sites, the unseen site, the different-modality set and
the corrupted set (one third each noise, blur, inversion of held-out images).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.image import Image
from medsight.safety.evaluate import ClassifierLike, evaluate_classifier_safety
from medsight.synthetic.ood_sets import CORRUPTIONS, corrupt, different_modality_images

log = logging.getLogger(__name__)


@dataclass
class SafetyTask:
    """A trained classifier and every set the safety evaluation needs."""

    bundle: ClassifierLike
    source: str
    model_dir: Path
    train: tuple[list[Image], np.ndarray]
    validation: tuple[list[Image], np.ndarray]
    tests: dict[str, tuple[list[Image], np.ndarray]]
    in_distribution: str = "held_out"
    unseen: str = "site_C"
    ood: dict[str, list[Image]] = field(default_factory=dict)
    case_ids: dict[str, list[str]] = field(default_factory=dict)  # per test set, when the images have case ids

    def evaluate(self, target_keep: float = 0.95, quiet: bool = True, mc_samples: int = 10) -> dict[str, Any]:
        res = evaluate_classifier_safety(self.bundle, self.train, self.validation, self.tests, self.ood,
                                         self.in_distribution, target_keep=target_keep, quiet=quiet,
                                         mc_samples=mc_samples)
        res["source"] = self.source
        return res


def corrupted_set(images: list[Image], seed: int = 0) -> list[Image]:
    """Each image corrupted once, cycling through noise, blur and inversion (severity 1, see ``corrupt``)."""
    return [corrupt(im, CORRUPTIONS[i % len(CORRUPTIONS)], seed=seed + i) for i, im in enumerate(images)]


def build_safety_task(cls_model: Path | None, seed: int = 0, fast: bool = False, quiet: bool = True,
                      work_dir: Path | None = None) -> SafetyTask:
    """The project classifier's task when usable, else the reference task trained here."""
    task = _project_task(cls_model, seed) if cls_model is not None else None
    if task is None:
        task = _reference(seed, fast, quiet, Path(work_dir or ".") / "reference_model")
    task.ood = {"different_modality": different_modality_images(),
                "corrupted": corrupted_set(task.tests[task.in_distribution][0], seed)}
    return task


def _project_task(cls_model: Path, seed: int) -> SafetyTask | None:
    """Hook for the project classifier (medsight.classification); None when it or its data cannot be loaded."""
    try:
        from medsight.demo.project_task import project_task
    except ImportError:
        return None
    try:
        return project_task(Path(cls_model), seed)
    except Exception as err:  # the classifier is another team's moving part: fall back, but say why
        log.warning("project classifier at %s not usable for the safety evaluation (%s); using the reference task",
                    cls_model, err)
        return None


def _reference(seed: int, fast: bool, quiet: bool, model_dir: Path) -> SafetyTask:
    from medsight.synthetic import reference_task as rt

    n_train, n_eval, epochs = (240, 80, 10) if fast else (600, 200, 20)
    train = rt.make_split(n_train, ("site_A", "site_B"), seed * 10 + 1)
    val = rt.make_split(n_eval, ("site_A", "site_B"), seed * 10 + 2)
    test = rt.make_split(n_eval, ("site_A", "site_B"), seed * 10 + 3)
    site_c = rt.make_split(n_eval, ("site_C",), seed * 10 + 4)
    bundle = rt.train_reference(*train, epochs=epochs, seed=seed, quiet=quiet)
    model_dir.mkdir(parents=True, exist_ok=True)
    return SafetyTask(bundle, "reference task (safety layer's SmallCNN on MNI slices)", model_dir, train, val,
                      {"held_out": test, "site_C": site_c})
