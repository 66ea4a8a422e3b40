"""The pieces of burned-in text redaction, each against a hand-made reference: region tables, contrast handling,
rotated-text box mapping (checked by OCR of text planted at a known place), frame ranges."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.dataset import Dataset

from medsight.deid.ocr import OcrSettings, _unrotate, display_grey, read_words
from medsight.deid.redact import _ranges
from medsight.deid.regions import DEFAULT_REGIONS, TextRegion, load_regions, regions_for
from medsight.errors import ConfigError, InputNotFoundError


def _ds(manufacturer: str, model: str, rows: int = 768, cols: int = 1024) -> Dataset:
    ds = Dataset()
    ds.Manufacturer, ds.ManufacturerModelName, ds.Rows, ds.Columns = manufacturer, model, rows, cols
    return ds


def test_region_table_matches_by_maker_model_and_size():
    assert regions_for(_ds("SIEMENS", "S2000"), DEFAULT_REGIONS) == [("siemens-s2000-banner", (0, 0, 900, 58))]
    assert regions_for(_ds("Philips Medical Systems", "EPIQ 5G"), DEFAULT_REGIONS)[0][1] == (0, 0, 1024, 24)
    assert regions_for(_ds("SIEMENS", "S2000", 600, 800), DEFAULT_REGIONS) == []  # another screen size
    assert regions_for(_ds("GE", "LOGIQ"), DEFAULT_REGIONS) == []
    wide = (TextRegion("any", boxes=((1000, 700, 100, 100),)),)  # clipped to the image
    assert regions_for(_ds("X", "Y"), wide) == [("any", (1000, 700, 1024, 768))]


def test_region_tables_load_from_json_and_csv(tmp_path):
    j = tmp_path / "r.json"
    j.write_text(json.dumps([{"name": "ge", "manufacturer": "^GE", "model": "LOGIQ", "rows": 600, "columns": 800,
                              "boxes": [[0, 0, 800, 30], [700, 570, 100, 30]]}]))
    (entry,) = load_regions(j)
    assert entry.boxes == ((0, 0, 800, 30), (700, 570, 100, 30)) and entry.matches("GE Healthcare", "LOGIQ E9",
                                                                                    600, 800)
    c = tmp_path / "r.csv"
    c.write_text("name,manufacturer,model,rows,columns,x,y,width,height\n"
                 "ge,^GE,LOGIQ,600,800,0,0,800,30\nge,^GE,LOGIQ,600,800,700,570,100,30\n"
                 "any,,,0,0,5,5,10,10\n")
    assert load_regions(c) == (entry, TextRegion("any", boxes=((5, 5, 10, 10),)))


@pytest.mark.parametrize("text", ['{"name": "x"}', '[{"name": "x", "boxes": [[0, 0, 0, 5]]}]',
                                  '[{"name": "x", "model": "(", "boxes": []}]', "not json"])
def test_bad_region_tables_are_config_errors(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.json"):
        load_regions(path)
    with pytest.raises(InputNotFoundError):
        load_regions(tmp_path / "missing.json")


def test_display_grey_handles_bit_depth_monochrome1_and_colour():
    a = np.zeros((10, 20), np.uint16)  # background at 0: the 0.5th percentile
    a[0, :4] = (0, 1000, 2000, 4095)
    assert display_grey(a)[0, :4].tolist() == [0, 62, 124, 255]  # v * 255 / 4095, floored
    assert display_grey(a, "MONOCHROME1")[0, :4].tolist() == [255, 193, 131, 0]
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (250, 250, 0)  # yellow text stays the brightest thing
    assert display_grey(rgb)[0, 0] == 255 and display_grey(np.full((3, 3), 7)).max() == 0


def test_unrotate_inverts_numpy_rotations():
    img = np.zeros((30, 50), bool)
    img[5:9, 10:20] = True  # a box (x0, y0, x1, y1) = (10, 5, 20, 9)
    for k in range(4):
        turned = np.rot90(img, k)
        ys, xs = np.nonzero(turned)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert _unrotate(box, k, 30, 50) == (10, 5, 20, 9), k


def test_read_words_finds_planted_text_upright_and_turned(need_tool):
    need_tool("tesseract")
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=18)
    canvas = Image.new("L", (400, 300), 0)
    ImageDraw.Draw(canvas).text((20, 20), "DOE JOHN 1234567", fill=255, font=font)
    label = Image.new("L", (170, 24), 0)
    ImageDraw.Draw(label).text((2, 2), "BORN 19510829", fill=255, font=font)
    canvas.paste(label.rotate(90, expand=True), (350, 100))  # reads bottom to top, at x 350-374, y 100-270
    words = read_words(np.asarray(canvas), OcrSettings(target_long_side=800))
    by_text = {w.text: w.box for w in words if w.conf >= 30}
    assert "1234567" in by_text and "19510829" in by_text, by_text
    x0, y0, x1, y1 = by_text["1234567"]
    assert 20 <= x0 < x1 <= 260 and 15 <= y0 < y1 <= 50
    x0, y0, x1, y1 = by_text["19510829"]  # the turned word's box comes back in frame coordinates
    assert 345 <= x0 < x1 <= 380 and 95 <= y0 < y1 <= 275 and y1 - y0 > x1 - x0


def test_frame_ranges():
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and _ranges([3]) == "3" and _ranges([]) == ""
