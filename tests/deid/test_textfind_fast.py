"""The fast paths of burned-in text finding give what the plain computations give.

* ``coverage`` (one painted mask + a summed-area table for all boxes) equals areas counted by hand;
* a later reading recomputes the top-hat only in windows around what was filled: equal, pixel for pixel, to
  the top-hat of the whole changed frame (scipy's own ``white_tophat``/``black_tophat`` as reference);
* later readings search only those windows and keep earlier text boxes elsewhere, and the display levels of
  the first reading are kept, so a crop a fill did not touch is read from identical pixels (cache hit);
* ``Engine.lines`` (layout iterator on raw bytes) returns the boxes Tesseract's ``GetComponentImages`` does.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from medsight.deid.redact import RedactOptions, _Redactor
from medsight.deid.textfind import coverage, covered


def test_coverage_equals_hand_counted_areas():
    others = [(0, 0, 10, 10), (5, 5, 15, 15)]  # union: 100 + 100 - 25 = 175 px
    boxes = [(0, 0, 20, 20), (0, 0, 10, 10), (20, 20, 30, 30), (8, 8, 12, 12), (3, 3, 3, 9)]
    # (0,0,20,20): 175/400; fully inside; disjoint; 4x4 box all inside the union; empty box
    assert coverage(boxes, others).tolist() == pytest.approx([175 / 400, 1.0, 0.0, 1.0, 0.0])
    assert covered((0, 0, 20, 20), others) == pytest.approx(175 / 400)
    assert covered((0, 0, 20, 20), []) == 0.0


def _dataset(frame: np.ndarray) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = frame.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frame.tobytes()
    return ds


def _text_frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    # smooth "anatomy" (a gradient and blurred blobs) with a little noise, and two printed lines
    blobs = ndimage.gaussian_filter(rng.random((300, 400)), 12)
    base = 40 + np.linspace(0, 50, 400)[None, :] + 400 * (blobs - blobs.mean()) + rng.normal(0, 3, (300, 400))
    img = Image.fromarray(np.clip(base, 0, 200).astype(np.uint8))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=20)
    d.text((20, 30), "SMITH JOHN", fill=250, font=font)
    d.text((20, 200), "16cm 36Hz", fill=250, font=font)
    return np.asarray(img).copy()


@pytest.mark.parametrize("polarity", ["light-on-dark", "dark-on-light"])
def test_windowed_tophat_equals_whole_frame_tophat(polarity):
    frame = _text_frame()
    r = _Redactor(_dataset(frame), frame[None].copy(), RedactOptions(), lambda s: s, frozenset())
    grey = frame.copy()
    r._tophat(grey, polarity, None)  # the first reading: the whole frame
    windows = [(10, 20, 150, 60), (300, 250, 400, 300)]  # one touching the frame's edge
    for x0, y0, x1, y1 in windows:
        grey[y0 + 5:y1 - 5, x0 + 5:x1 - 5] = 0
    got = r._tophat(grey, polarity, windows).copy()
    ref = (ndimage.white_tophat if polarity == "light-on-dark" else ndimage.black_tophat)(grey, size=15)
    assert np.array_equal(got, ref)
    assert not np.array_equal(got, r._tophat(frame, polarity, None))  # the fill did change the top-hat


def test_later_reading_looks_only_around_fills_and_reuses_untouched_crops(need_tool):
    need_tool("tesseract")
    frame = _text_frame()
    r = _Redactor(_dataset(frame), frame[None].copy(), RedactOptions(), lambda s: s, frozenset())
    first = r.read()
    assert any(w.text == "SMITH" and w.identifier for _i, w in first)
    assert any(w.text == "16cm" and not w.identifier for _i, w in first)
    crops, earlier = r.reader.crops_read, list(r.candidates)
    name_box = next(w.line_box for _i, w in first if w.text == "SMITH")
    r.fill(name_box, "ocr", 0, "SMITH")
    (window,) = r._windows()
    assert window[0] <= name_box[0] and window[1] <= name_box[1] and window[2] >= name_box[2] \
        and window[3] >= name_box[3]
    assert window[3] < 200  # the annotation line far below is outside the window

    def outside(b):
        return b[2] <= window[0] or b[0] >= window[2] or b[3] <= window[1] or b[1] >= window[3]

    again = r.read()
    assert not any("SMITH" in w.text or "JOHN" in w.text for _i, w in again)
    assert any(w.text == "16cm" and not w.identifier for _i, w in again)
    # boxes outside the window are the earlier ones; only boxes inside it were read again
    assert {c for c in earlier if outside(c.box)} == {c for c in r.candidates if outside(c.box)}
    assert r.reader.crops_read - crops <= sum(not outside(c.box) for c in r.candidates)


def test_layout_lines_equal_component_images(need_tool):
    need_tool("tesseract")
    import tesserocr

    from medsight.deid.tess import engine

    page = 255 - _text_frame()
    eng = engine()
    got = eng.lines(page)
    eng._set(page)  # the same image, handed over the same way
    ref = [(c[1]["x"], c[1]["y"], c[1]["x"] + c[1]["w"], c[1]["y"] + c[1]["h"])
           for c in eng.api.GetComponentImages(tesserocr.RIL.TEXTLINE, True)]
    assert got and sorted(got) == sorted(ref)


def test_wide_layout_block_gives_way_to_the_morphology_lines_inside():
    """Layout analysis joined a turned date with the bright bone beside it into one block 101 px across (seen on
    a planted head CT in the burned-in benchmark: the block read as junk and its bright background hid the
    text's polarity); the 36-px morphology line inside replaces it. A block with no line inside (two lines of
    small print) and a one-line layout box stay."""
    from medsight.deid.textfind import FindSettings, _blocks_to_lines

    s = FindSettings()
    block, line = (386, 5, 487, 467), (451, 0, 487, 193)
    assert _blocks_to_lines([block], [line], s, vertical=True) == []
    assert _blocks_to_lines([block], [(10, 10, 40, 100)], s, vertical=True) == [block]  # line elsewhere
    one_line = (440, 0, 490, 200)  # 50 px across: a line, kept even with a line inside
    assert _blocks_to_lines([one_line], [line], s, vertical=True) == [one_line]
    # level text: "across" is the height
    assert _blocks_to_lines([(0, 0, 300, 100)], [(10, 40, 200, 60)], s, vertical=False) == []


def _merge_reference(boxes, vertical, gap=4):
    """The pairwise loop merge() replaced (kept here as the reference it must equal)."""
    a0, a1, b0, b1 = (1, 3, 0, 2) if vertical else (0, 2, 1, 3)
    boxes = [tuple(b) for b in boxes]
    changed = True
    while changed:
        changed = False
        out = []
        for b in sorted(boxes):
            for o in out:
                overlap = min(b[b1], o[b1]) - max(b[b0], o[b0])
                if (overlap >= 0.5 * min(b[b1] - b[b0], o[b1] - o[b0]) and b[a0] <= o[a1] + gap
                        and o[a0] <= b[a1] + gap):
                    o[0], o[1], o[2], o[3] = min(o[0], b[0]), min(o[1], b[1]), max(o[2], b[2]), max(o[3], b[3])
                    changed = True
                    break
            else:
                out.append(list(b))
        boxes = [tuple(o) for o in out]
    return boxes


@pytest.mark.parametrize("vertical", [False, True])
def test_vectorised_merge_equals_the_pairwise_loop(vertical):
    from medsight.deid.textfind import merge

    rng = np.random.default_rng(1)
    for n in (0, 1, 5, 60, 300):
        x0, y0 = rng.integers(0, 400, n), rng.integers(0, 400, n)
        w, h = rng.integers(3, 60, n), rng.integers(3, 30, n)
        boxes = [(int(a), int(b), int(a + c), int(b + d)) for a, b, c, d in zip(x0, y0, w, h)]
        got = merge(boxes, vertical)
        assert got == _merge_reference(boxes, vertical)
        assert len(got) < len(boxes) or n < 60  # many random boxes do touch: merging happened


def test_coverage_per_box_path_equals_summed_area_table():
    # a few small boxes spread over a large extent take the per-box path; the same boxes plus one covering the
    # whole extent take the summed-area path: the small boxes' shares must agree, and match a hand count
    others = [(100, 100, 140, 120), (900, 700, 960, 712)]
    small = [(90, 95, 150, 125), (930, 706, 990, 716), (400, 400, 420, 410)]
    # (90,95,150,125): 1800 px, 40x20 = 800 inside; (930,706,990,716): 600 px, 30x6 = 180 inside
    want = [800 / 1800, 180 / 600, 0.0]
    assert coverage(small, others).tolist() == pytest.approx(want)
    big = coverage(small + [(90, 95, 990, 716)], others).tolist()
    assert big[:3] == pytest.approx(want)


def test_percentiles_equal_numpy():
    from medsight.deid.textfind import percentiles

    rng = np.random.default_rng(1)
    for shape in [(1, 1), (3, 7), (17, 40), (2, 2)]:
        a = rng.integers(0, 256, shape).astype(np.uint8)
        assert percentiles(a, (5, 50, 95)) == pytest.approx(np.percentile(a, (5, 50, 95)).tolist(), abs=1e-9)


def test_halved_page_keeps_one_pixel_strokes_and_layout_scales_boxes_back(need_tool):
    need_tool("tesseract")
    from medsight.deid.tess import engine
    from medsight.deid.textfind import FindSettings, _layout, halve

    pg = np.full((6, 6), 255, np.uint8)
    pg[:, 3] = 0  # a one-pixel dark stroke: min-pooling keeps it in its 2x2 blocks' column
    assert halve(pg).tolist() == [[255, 0, 255]] * 3
    # a page large enough to be halved gives the same text lines as the full page (within 2 px per side)
    page = 255 - _text_frame()
    s_full, s_half = FindSettings(), FindSettings(layout_halve=page.size)
    full = sorted(_layout(page, engine(), s_full, False))
    half = sorted(_layout(page, engine(), s_half, False))
    assert len(full) == len(half) == 2
    for a, b in zip(full, half):
        assert max(abs(u - v) for u, v in zip(a, b)) <= 2
