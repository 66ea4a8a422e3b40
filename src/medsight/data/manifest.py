"""The CSV manifest: one row per case, so that patient and site travel with every image.

Required columns: ``case_id,image,label,patient_id,site``; any further column (scanner, sex, age...) is kept as a
case attribute for subgroup analysis. ``image`` may list several channels separated by ``;`` and paths are
relative to the manifest's folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medsight.errors import DatasetError, InputNotFoundError

REQUIRED_COLUMNS = ("case_id", "image", "label", "patient_id", "site")


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV, checked for required columns, blank cells and duplicate case ids."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("no manifest CSV here; check the path", path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"manifest lacks column(s) {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)}",
                               path)
        rows = [dict(r) for r in reader]
    if not rows:
        raise DatasetError("manifest has no rows; add one row per case", path)
    seen: set[str] = set()
    for line_no, row in enumerate(rows, start=2):
        for col in ("case_id", "image", "patient_id"):
            if not (row.get(col) or "").strip():
                raise DatasetError(f"row {line_no} (case {row.get('case_id') or '?'}) has an empty '{col}'", path)
        cid = row["case_id"].strip()
        if cid in seen:
            raise DatasetError(f"row {line_no}: case_id '{cid}' appears twice; case ids must be unique", path)
        seen.add(cid)
    return rows
