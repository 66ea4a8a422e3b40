"""Manifests: one CSV reader for every task, so that patient and site travel with every image.

One row per case or image. Every manifest has ``image``, ``patient_id`` and ``site``; paths are relative to the
manifest's folder (or absolute). ``read_table`` checks what all manifests share (the file, its columns, blank
cells) and the two views add what their task needs:

- segmentation (``read_manifest``): ``case_id,image,label,patient_id,site``; ``image`` may list channels
  separated by ``;``; any further column (scanner, sex, age...) is a case attribute for subgroup analysis.
- classification (``read_classification_manifest``): one column per label, optional ``split`` (train / val /
  test) and ``mask``. A missing file, a label value the task does not allow or a patient in two splits raises
  ``DatasetError`` naming the CSV row, so a bad manifest never costs a training run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.errors import DatasetError, InputNotFoundError

REQUIRED_COLUMNS = ("case_id", "image", "label", "patient_id", "site")


def read_table(path: str | Path, required: Sequence[str], hint: str, not_blank: Sequence[str] | None = None
               ) -> pd.DataFrame:
    """The CSV as strings (blank cells ''), checked for the file, the ``required`` columns, at least one row and
    no blank cell in ``not_blank`` (default: the required columns)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("manifest CSV not found; check the path", path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot parse the manifest CSV ({str(err).splitlines()[0]})", path) from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(f"manifest lacks column(s) {', '.join(missing)}; {hint}", path)
    if len(table) == 0:
        raise DatasetError("manifest has no rows; add one row per case", path)
    for c in (required if not_blank is None else not_blank):
        blank = np.flatnonzero(table[c].str.strip() == "")
        if len(blank):
            raise DatasetError(f"row {blank[0] + 2}: empty {c}", path)
    return table


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a segmentation manifest, checked for required columns, blank cells and duplicate case ids."""
    path = Path(path)
    table = read_table(path, REQUIRED_COLUMNS, f"required: {', '.join(REQUIRED_COLUMNS)}",
                       not_blank=("case_id", "image", "patient_id"))
    seen: set[str] = set()
    for line_no, cid in enumerate(table["case_id"].str.strip(), start=2):
        if cid in seen:
            raise DatasetError(f"row {line_no}: case_id '{cid}' appears twice; case ids must be unique", path)
        seen.add(cid)
    return table.to_dict("records")


CLS_REQUIRED = ("image", "patient_id", "site")
RESERVED = {"image", "patient_id", "site", "split", "case_id", "mask", "scanner", "sex", "age", "slice_index"}
TASKS = ("binary", "multiclass", "multilabel")
SPLITS = ("train", "val", "test")


@dataclass
class ClsManifest:
    """Validated rows: absolute image paths, patient/site per row, the label matrix and the task."""

    path: Path
    table: pd.DataFrame  # the CSV as read (one row per image), plus column ``image_path`` (absolute)
    labels: list[str]  # label column names (multiclass: the one column)
    task: str
    y: np.ndarray  # binary/multilabel: (n, n_labels) float 0/1; multiclass: (n,) int class index
    classes: list[str] = field(default_factory=list)  # multiclass: the class values as written in the CSV

    @property
    def image_paths(self) -> list[Path]:
        return [Path(p) for p in self.table["image_path"]]

    @property
    def mask_paths(self) -> list[Path | None]:
        """Per row the mask file, or None (no mask column, or an empty cell: no finding outlined)."""
        if "mask_path" not in self.table.columns:
            return [None] * len(self.table)
        return [Path(p) if p else None for p in self.table["mask_path"]]

    @property
    def patients(self) -> np.ndarray:
        return self.table["patient_id"].astype(str).to_numpy()

    @property
    def sites(self) -> np.ndarray:
        return self.table["site"].astype(str).to_numpy()

    def row_number(self, i: int) -> int:
        """The CSV line of row ``i`` (header is line 1), for error messages."""
        return int(i) + 2

    def stratify_key(self) -> np.ndarray:
        """One integer per row for stratified splitting (multilabel: the first label)."""
        return self.y.astype(int) if self.task == "multiclass" else self.y[:, 0].astype(int)


def infer_labels(columns: Sequence[str]) -> list[str]:
    """Label columns = every column that is not a reserved metadata column."""
    return [c for c in columns if c not in RESERVED and not c.startswith("_")]


def read_classification_manifest(path: str | Path, labels: Sequence[str] | None = None, task: str | None = None,
                                 check_files: bool = True) -> ClsManifest:
    """Read ``path`` and check it; raises DatasetError naming the first bad row.

    ``labels`` defaults to every non-metadata column; ``task`` defaults to binary for one 0/1 column,
    multilabel for several 0/1 columns, multiclass for one column with more than two values.
    """
    path = Path(path)
    table = read_table(path, CLS_REQUIRED, "need image, patient_id, site and labels")
    labels = list(labels) if labels else infer_labels(table.columns)
    if not labels:
        raise DatasetError("manifest has no label column; add one (e.g. lesion with values 0/1)", path)
    for c in labels:
        if c not in table.columns:
            raise DatasetError(f"label column {c!r} is not in the manifest (columns: {', '.join(table.columns)})", path)
    if task is not None and task not in TASKS:
        raise DatasetError(f"task must be one of {', '.join(TASKS)}, got {task!r}", path)
    table["image_path"] = [str(_resolve(path, p)) for p in table["image"]]
    if check_files:
        for i, p in enumerate(table["image_path"]):
            if not Path(p).exists():
                raise DatasetError(f"row {i + 2}: image {table['image'].iloc[i]} does not exist", path)
    if "mask" in table.columns:  # optional lesion masks: localisation supervision and the pointing game
        table["mask_path"] = [str(_resolve(path, p)) if str(p).strip() else "" for p in table["mask"]]
        if check_files:
            for i, p in enumerate(table["mask_path"]):
                if p and not Path(p).exists():
                    raise DatasetError(f"row {i + 2}: mask {table['mask'].iloc[i]} does not exist", path)
    if "split" in table.columns:
        _check_splits(table, path)

    task = task or _guess_task(table, labels)
    if task == "multiclass":
        if len(labels) != 1:
            raise DatasetError(f"a multiclass task takes one label column, got {len(labels)}: {', '.join(labels)}",
                               path)
        y, classes = _multiclass(table, labels[0], path)
        return ClsManifest(path, table, labels, task, y, classes)
    if task == "binary" and len(labels) != 1:
        raise DatasetError("a binary task takes one label column; use --task multilabel for several", path)
    y = np.stack([_binary(table, c, path) for c in labels], axis=1)
    return ClsManifest(path, table, labels, task, y)


def _resolve(manifest: Path, image: str) -> Path:
    p = Path(image)
    return p if p.is_absolute() else (manifest.parent / p).resolve()


def _guess_task(table: pd.DataFrame, labels: list[str]) -> str:
    if len(labels) > 1:
        return "multilabel"
    values = set(table[labels[0]].str.strip())
    return "binary" if values <= {"0", "1", "0.0", "1.0"} else "multiclass"


def _binary(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    out = np.empty(len(table), dtype=np.float32)
    for i, v in enumerate(table[column]):
        s = str(v).strip().lower()
        if s in ("1", "1.0", "true", "yes"):
            out[i] = 1.0
        elif s in ("0", "0.0", "false", "no"):
            out[i] = 0.0
        else:
            raise DatasetError(f"row {i + 2}: label {column}={v!r} is not 0/1 "
                               "(binary and multi-label columns take 0 or 1)", path)
    return out


def _multiclass(table: pd.DataFrame, column: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """Class values must be integers 0..K-1 (ordinal grades); a gap or a non-integer is an unknown value."""
    values = [str(v).strip() for v in table[column]]
    ints: list[int] = []
    for i, v in enumerate(values):
        try:
            f = float(v)
        except ValueError:
            f = float("nan")
        if not np.isfinite(f) or f != int(f) or f < 0:
            raise DatasetError(f"row {i + 2}: label {column}={v!r} is not a class index (use integers 0..K-1)", path)
        ints.append(int(f))
    k = max(ints) + 1
    present = set(ints)
    if len(present) < 2:
        raise DatasetError(f"label {column} has a single class; a classifier needs at least two", path)
    gaps = sorted(set(range(k)) - present)
    if gaps:
        first = next(i for i, v in enumerate(ints) if v == k - 1)
        raise DatasetError(f"row {first + 2}: label {column}={k - 1} but class(es) {gaps} never occur; "
                           "renumber the classes 0..K-1", path)
    return np.asarray(ints, dtype=np.int64), [str(c) for c in range(k)]


def _check_splits(table: pd.DataFrame, path: Path) -> None:
    seen: dict[str, str] = {}
    for i, (pid, split) in enumerate(zip(table["patient_id"].astype(str), table["split"].astype(str))):
        split = split.strip().lower()
        if split not in SPLITS:
            raise DatasetError(f"row {i + 2}: split {split!r} is not one of {', '.join(SPLITS)}", path)
        first = seen.setdefault(pid, split)
        if first != split:
            raise DatasetError(f"row {i + 2}: patient {pid} is in split {split!r} but also in {first!r}; "
                               "all images of a patient must share one split", path)
