"""Known burned-in text regions per manufacturer and model: blanked before OCR, whatever OCR would read there.

Many scanners draw patient data at fixed places (a banner along the top of an ultrasound screen). Where that place
is known, blanking it does not depend on OCR reading small, low-contrast or stylised text at all. This is the
approach of RSNA CTP's DicomPixelAnonymizer scripts; the table here is our own, as data the user extends:

JSON: a list of objects ``{"name", "manufacturer", "model", "rows", "columns", "boxes": [[x, y, w, h], ...]}``
CSV: columns ``name,manufacturer,model,rows,columns,x,y,width,height`` (one box per line; lines sharing a name
form one entry).

``manufacturer`` and ``model`` are case-insensitive regular expressions searched in Manufacturer and
ManufacturerModelName (empty: any); ``rows``/``columns`` (empty or 0: any) restrict an entry to one screen size.
Boxes are in pixels, clipped to the image.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from medsight.errors import ConfigError, InputNotFoundError


@dataclass(frozen=True)
class TextRegion:
    """One table entry: where a device draws text, for images of one size (or any)."""

    name: str
    manufacturer: str = ""
    model: str = ""
    rows: int = 0
    columns: int = 0
    boxes: tuple[tuple[int, int, int, int], ...] = ()

    def matches(self, manufacturer: str, model: str, rows: int, columns: int) -> bool:
        return (re.search(self.manufacturer, manufacturer, re.I) is not None
                and re.search(self.model, model, re.I) is not None
                and self.rows in (0, rows) and self.columns in (0, columns))


# Read off the deid-data ultrasounds (tests/deid check that these banners hold the patient's name, ID and
# birth date); extend with --text-regions for other devices.
DEFAULT_REGIONS: tuple[TextRegion, ...] = (
    TextRegion("philips-epiq-banner", "philips", r"^EPIQ", 768, 1024, ((0, 0, 1024, 24),)),
    TextRegion("siemens-s2000-banner", "siemens", r"^S2000$", 768, 1024, ((0, 0, 900, 58),)),
)


def _region(name: str, manufacturer: str, model: str, rows, columns, boxes, where: str) -> TextRegion:
    try:
        for pattern in (manufacturer, model):
            re.compile(pattern or "")
        parsed = tuple(tuple(int(v) for v in box) for box in boxes)
        if any(len(b) != 4 or b[2] <= 0 or b[3] <= 0 or b[0] < 0 or b[1] < 0 for b in parsed):
            raise ValueError("each box needs x, y >= 0 and width, height > 0")
        return TextRegion(str(name), manufacturer or "", model or "", int(rows or 0), int(columns or 0), parsed)
    except (re.error, TypeError, ValueError) as err:
        raise ConfigError(f"text region table {where}: entry {name!r}: {err}; fix the entry "
                          "(see docs/privacy.md, 'known text regions')") from None


def load_regions(path: str | Path) -> tuple[TextRegion, ...]:
    """Entries of a user's JSON or CSV table (see the module docstring); errors name the file and the entry."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("text region table not found", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"text region table {path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                          "UTF-8 JSON or CSV") from None
    if path.suffix.lower() == ".csv":
        grouped: dict[tuple, list] = {}
        rows = list(csv.DictReader(text.splitlines()))
        need = {"name", "manufacturer", "model", "rows", "columns", "x", "y", "width", "height"}
        if rows and not need <= set(rows[0]):
            raise ConfigError(f"text region table {path}: needs the columns {','.join(sorted(need))}")
        for r in rows:
            key = (r["name"], r["manufacturer"], r["model"], r["rows"], r["columns"])
            grouped.setdefault(key, []).append((r["x"], r["y"], r["width"], r["height"]))
        return tuple(_region(*key, boxes, str(path)) for key, boxes in grouped.items())
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"text region table {path} is not valid JSON ({err}); fix it or use CSV") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"text region table {path}: expected a JSON list of objects")
    return tuple(_region(e.get("name", f"entry {i}"), e.get("manufacturer", ""), e.get("model", ""),
                         e.get("rows", 0), e.get("columns", 0), e.get("boxes", ()), str(path))
                 for i, e in enumerate(entries))


def regions_for(ds, table: tuple[TextRegion, ...]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(entry name, (x0, y0, x1, y1)) of every table box that applies to this dataset, clipped to the image."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    manufacturer = str(ds.get("Manufacturer", "") or "")
    model = str(ds.get("ManufacturerModelName", "") or "")
    out = []
    for entry in table:
        if entry.matches(manufacturer, model, rows, cols):
            for x, y, w, h in entry.boxes:
                box = (min(x, cols), min(y, rows), min(x + w, cols), min(y + h, rows))
                if box[2] > box[0] and box[3] > box[1]:
                    out.append((entry.name, box))
    return out
