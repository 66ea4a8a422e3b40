"""The planted benchmark's last real leaks (their glyphs' ink unchanged in the written file), as attacks: words
that Tesseract 5 reads letter by letter at 80-99 but scores 0 as words (tesseract-ocr/tesseract#3983). A turned
35 % date on the Philips screen, cut at its end by the fill of an annotation it touches, read "04/08/19<" (0);
a 35 % monospaced name on the GE screen whose space holds the Doppler box's edge, "VAN-AN" (0) beside a filled
"NGUYEN" (99). Each is drawn again as the benchmark drew it on pydicom-data's real screen and read back from the
written pixels with plain Tesseract (``read_area``); the rules are checked on hand-made words too."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
from PIL import ImageFont
from pydicom.uid import ExplicitVRLittleEndian

from medsight.deid.reading import FoundWord, along_line
from medsight.deid.redact import RedactOptions, redact_dataset
from medsight.deid.words import classify, phi_terms

from deid_drawing import draw_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_burned_in import _lcs  # noqa: E402  (the benchmark's measure: characters read in order)


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def _pieces(text: str, read: str) -> list[str]:
    """3-character runs of ``text``'s words found in ``read``."""
    got = _alnum(read)
    return [w[i:i + 3] for w in (_alnum(t) for t in text.split()) for i in range(len(w) - 2) if w[i:i + 3] in got]


def _word(text: str, conf: float, chars: float, box=(0, 0, 60, 20)) -> FoundWord:
    kind, rule = classify(text)
    return FoundWord(text, conf, box, (box, "light-on-dark", False, 0), False, kind, rule, box, chars)


def test_a_date_is_as_sure_as_its_least_sure_character_an_unknown_word_is_not():
    assert _word("04/08/19<", 0.0, 82.7).sure == 82.7  # a date's shape is evidence of its own
    assert _word("04/08/19<", 91.0, 82.7).sure == 91.0  # the higher of the two
    assert _word("mete!", 0.0, 90.0).sure == 0.0  # a made-up word read in speckle: the word's own figure
    assert _word("VAN-AN", 0.0, 83.1).sure == 0.0
    assert _word("04/08/19<", 0.0, -1.0).sure == 0.0  # characters not known (the full-frame reader)


def test_rest_of_a_name_is_taken_in_across_a_space_wider_than_the_reach():
    line = (188, 241, 301, 275)  # "NGUYEN", 34 px high: reach 0.6 -> 20 px, a printed run's gap 1.5 -> 51 px
    rest = FoundWord("VAN-AN", 0.0, (326, 241, 446, 272), ((326, 241, 446, 272), "flat-ink", False, 0), False,
                     "identifier", "unknown word", (326, 241, 446, 272), 83.1)
    box, taken = along_line(line, False, [rest], h=480, w=640, reach=0.6)  # 25 px after: beyond 20, within 51
    assert taken == [rest]
    assert box == (188 - 20, 241, 446 + 20, 275)  # 258 px <= 2 x 113 + 51
    box, taken = along_line(line, False, [rest], h=480, w=640, reach=0.6, join=0.6)  # the old reach: left out
    assert taken == [] and box == (168, 241, 321, 275)


def test_a_word_weak_as_a_word_is_taken_only_beyond_the_line_and_at_its_height():
    line = (137, 443, 204, 472)  # a CT's "MRN", 29 px high: a printed run's gap 1.5 -> 43 px
    def word(box, conf):
        return FoundWord("ARN", conf, box, (box, "light-on-dark", False, 0), False, "identifier", "unknown word",
                         box, 88.0)
    over = word((87, 435, 204, 485), 19.0)  # over the label, 50 px high: a looser reading of the same text
    tall = word((210, 435, 260, 485), 19.0)  # beyond it, but 50 px high (> 1.25 x 29)
    beyond = word((210, 444, 260, 471), 19.0)  # beyond it, 27 px high: the rest of the line
    _box, taken = along_line(line, False, [over, tall, beyond], h=512, w=512, reach=0.6, weak_below=30.0)
    assert taken == [beyond]
    sure = word((87, 435, 204, 485), 40.0)  # read at 40 as a word: taken as before (within 2x the height)
    _box, taken = along_line(line, False, [sure], h=512, w=512, reach=0.6, weak_below=30.0)
    assert taken == [sure]


def _written(ds: pydicom.Dataset) -> np.ndarray:
    result = redact_dataset(ds, RedactOptions(), lambda s: f"h({len(s)})", phi_terms(ds))
    assert result.clean, result.reason
    return ds.pixel_array


def test_turned_faint_date_cut_by_a_fill_is_filled_on_the_real_philips_screen(dicom_test_file, need_tool,
                                                                             read_area):
    """PIL's default font, 17 px, 35 % grey, turned 90 degrees at (46, 224): its last digit touches the screen's
    own "HPen" annotation. After "HPen" (an unknown word) is filled, the date alone reads "04/08/19<" (word 0,
    characters 83-99): it was left with 6 characters readable."""
    need_tool("tesseract")
    ds = pydicom.dcmread(dicom_test_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    img = np.array(ds.pixel_array)
    lo, hi = np.percentile(img.astype(np.float64), (1, 99.9))
    box, alpha = draw_text(img, "04/08/1932", (46, 224), ImageFont.load_default(size=17),
                           int(np.rint(lo + 0.35 * (hi - lo))), rotation=90)
    ds.PixelData, ds.file_meta.TransferSyntaxUID = img.tobytes(), ExplicitVRLittleEndian
    after = _written(ds)
    x0, y0, x1, y1 = box
    glyphs = alpha > 0.5
    assert (after[y0:y1, x0:x1][glyphs] != img[y0:y1, x0:x1][glyphs]).mean() >= 0.95  # its ink is covered
    left = _alnum(read_area(after, box, 90))
    assert "0408" not in left and "193" not in left, left


def test_name_split_by_the_doppler_box_edge_is_filled_whole_on_the_real_ge_screen(dicom_test_file, need_tool,
                                                                                  read_area):
    """DejaVuSansMono 33 px at (183, 244) in 65 % yellowish grey (166, 166, 50) on pydicom-data's GE colour
    ultrasound: "NGUYEN" lies left of the Doppler box's white edge, "VAN AN" right of it; "NGUYEN" was filled
    and "VAN AN" (read "VAN-AN", word 0, characters 83-99) left readable."""
    need_tool("tesseract")
    ds = pydicom.dcmread(dicom_test_file("US1_UNCR.dcm"))
    img = np.array(ds.pixel_array)
    font = ImageFont.truetype("DejaVuSansMono.ttf", 33)
    for ch, value in enumerate((166, 166, 50)):
        plane = np.ascontiguousarray(img[..., ch])
        box, alpha = draw_text(plane, "NGUYEN VAN AN", (183, 244), font, value)
        img[..., ch] = plane
    ds.PixelData, ds.file_meta.TransferSyntaxUID = img.tobytes(), ExplicitVRLittleEndian
    right = (321, box[1], box[2], box[3])  # right of the Doppler box's edge: "VAN AN"
    before = _alnum(read_area(img.max(axis=-1), right, 0))
    assert _lcs("VANAN", before) >= 4, before  # legible as drawn ("WAN AN")
    after = _written(ds)
    x0, y0, x1, y1 = box
    glyphs = alpha > 0.5
    assert (after[y0:y1, x0:x1][glyphs] != img[y0:y1, x0:x1][glyphs]).any(axis=-1).mean() >= 0.95
    left = _alnum(read_area(after.max(axis=-1), right, 0))
    assert _lcs("VANAN", left) <= 1 and _pieces("NGUYEN", read_area(after.max(axis=-1), box, 0)) == [], left
