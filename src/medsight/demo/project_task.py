"""The safety evaluation on the project's own classifier: a ``train-cls`` model directory and its manifest.

``build_safety_task`` calls ``project_task`` first. The sets come from the manifest the model was trained on
(its path and SHA-256 are in the model's ``config.json``; a changed manifest is refused rather than silently
evaluated): ``train`` and ``val`` rows as the model saw them, ``test`` rows of the training sites as the
in-distribution held-out set, and every row of the unseen site as the shifted set. Targets are all label
columns, in the model's label order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.classification import load_classifier
from medsight.errors import ConfigError, DatasetError
from medsight.files import sha256_file
from medsight.image import Image
from medsight.io import read_image

log = logging.getLogger(__name__)


def project_task(model_dir: Path, seed: int = 0, unseen_site: str = "site_C",
                 manifest: Path | None = None):  # noqa: ANN201 - SafetyTask (import cycle)
    """A ``SafetyTask`` for the classifier in ``model_dir``; raises when its data cannot be found unchanged."""
    from medsight.demo.safety_task import SafetyTask

    bundle = load_classifier(model_dir)
    data = bundle.config.get("data") or {}
    path = Path(manifest or data.get("manifest") or "")
    if not path.is_file():
        raise DatasetError("the classifier's training manifest is not on disk; pass its path", path)
    if manifest is None and data.get("manifest_sha256") and sha256_file(path) != data["manifest_sha256"]:
        raise DatasetError("the manifest changed since the classifier was trained (SHA-256 differs)", path)
    if bundle.config.get("task") == "multiclass":
        raise ConfigError("the project safety task covers binary and multi-label classifiers")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "split" not in table.columns:
        raise DatasetError("the manifest has no split column, so held-out rows cannot be told apart", path)
    columns = list(bundle.config.get("label_columns") or bundle.labels)
    root = path.parent
    split, site = table["split"].str.lower(), table.get("site", pd.Series([""] * len(table)))

    def rows(selector: pd.Series) -> tuple[list[Image], np.ndarray]:
        part = table[selector]
        images = [read_image(p if Path(p).is_absolute() else root / p) for p in part["image"]]
        return images, part[columns].astype(int).to_numpy()

    inside = site != unseen_site
    selectors = {"held_out": (split == "test") & inside, unseen_site: site == unseen_site}
    tests = {name: rows(sel) for name, sel in selectors.items()}
    ids = table["case_id"] if "case_id" in table.columns else table["image"]
    case_ids = {name: ids[sel].astype(str).tolist() for name, sel in selectors.items()}
    if len(tests[unseen_site][0]) == 0:
        del tests[unseen_site]
    train, val = rows((split == "train") & inside), rows((split == "val") & inside)
    if not len(train[0]) or not len(val[0]) or not len(tests["held_out"][0]):
        raise DatasetError("the manifest needs train, val and test rows of the training sites", path)
    log.info("safety task from the project classifier %s: %d train, %d val, %s", model_dir, len(train[0]),
             len(val[0]), {k: len(v[0]) for k, v in tests.items()})
    return SafetyTask(bundle, f"project classifier ({bundle.config.get('backbone')}, {model_dir})", Path(model_dir),
                      train, val, tests, in_distribution="held_out",
                      unseen=unseen_site if unseen_site in tests else "held_out",
                      case_ids={**{k: v for k, v in case_ids.items() if k in tests},
                                "validation": ids[(split == "val") & inside].astype(str).tolist()})
