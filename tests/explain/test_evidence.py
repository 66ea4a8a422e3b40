"""Evidence figures: heat, outlines and lesion ids land where the voxels are at display size; orientation follows
the direction cosines; captions carry the prediction table's numbers; same input, same bytes."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image as PILImage

from medsight.explain import display, lesion_table
from medsight.explain.evidence import (Finding, classification_figure, evidence_thumbnail, montage_figure,
                                       segmentation_figure, slide_figure)
from medsight.explain.figure import FINDING_COLOUR, HEAT_CMAP, png_text
from medsight.image import Geometry, Image, Provenance

FINDING = Finding("lesion", 0.8734, True, 0.42, "positive", "refer", "out of distribution (Mahalanobis 41.2)")


def _read(data: bytes) -> tuple[np.ndarray, dict, str]:
    text = png_text(data)
    rgb = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB")).astype(np.float32) / 255
    return rgb, json.loads(text["medsight:layout"]), text["Description"]


def _panel(rgb: np.ndarray, layout: dict, kind: str, row: int = 0) -> np.ndarray:
    box = next(b for b in layout["panels"] if b["kind"] == kind and b["row"] == row)
    return rgb[box["top"]:box["top"] + box["height"], box["left"]:box["left"] + box["width"]]


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(first row, last row + 1, first column, last column + 1) of a mask's pixels."""
    rr, cc = np.nonzero(mask)
    return rr.min(), rr.max() + 1, cc.min(), cc.max() + 1


def _slice_image(direction=((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)), array: np.ndarray | None = None) -> Image:
    """A one-slice axial scan 40 x 30 voxels of 0.8 x 1.2 mm; a bright square at i 10..19, j 5..11."""
    if array is None:
        array = np.full((40, 30, 1), 100.0, np.float32)
        array[10:20, 5:12] = 900.0
    return Image(array, Geometry((0.8, 1.2, 3.0), (0.0, 0.0, 0.0), direction), Provenance(modality="MR"))


def test_square_heat_and_outline_at_display_size() -> None:
    image = _slice_image()
    heat = np.zeros((40, 30), np.float32)
    heat[10:20, 5:12] = 1.0  # the model's map: on the square (on the squeezed grid, as predict-cls has it)
    rgb, layout, _ = _read(classification_figure(image, heat, FINDING))
    grey, ev = _panel(rgb, layout, "image"), _panel(rgb, layout, "evidence")
    # true aspect: 32 mm wide, 36 mm high -> 512 rows, 455 columns
    assert grey.shape[:2] == (512, round(32 / 36 * 512))
    px_col, px_row = grey.shape[1] / 40, grey.shape[0] / 30  # display pixels per voxel
    # voxel i = 10..19 spans continuous index 9.5..19.5 -> display columns 10*px .. 20*px (radiological: i -> L
    # is on the viewer's right, j -> P goes down, as stored)
    want = (5 * px_row, 12 * px_row, 10 * px_col, 20 * px_col)
    np.testing.assert_allclose(_bbox(grey[..., 0] > 0.5), want, atol=1.0)
    red = np.all(np.abs(ev - np.asarray(FINDING_COLOUR)) < 0.02, axis=-1)
    np.testing.assert_allclose(_bbox(red), want, atol=1.0)  # the outline sits on the square's edge
    coloured = np.abs(ev[..., 0] - ev[..., 2]) > 0.05  # heat makes pixels non-grey
    np.testing.assert_allclose(_bbox(coloured & ~red), want, atol=px_col)  # fades over < one voxel
    full = colormaps[HEAT_CMAP](1.0)[:3]
    m = int(np.ceil(px_col))  # beyond the outline and the half-voxel ramp of linear interpolation
    inner = ev[int(want[0]) + m:int(want[1]) - m, int(want[2]) + m:int(want[3]) - m]
    np.testing.assert_allclose(inner, np.broadcast_to(0.25 * 1.0 + 0.75 * np.asarray(full), inner.shape), atol=0.01)


def test_heat_away_from_the_square_lands_at_its_own_place() -> None:
    image = _slice_image()
    ii, jj = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    heat = np.exp(-((ii - 30) ** 2 + (jj - 22) ** 2) / (2 * 2.0 ** 2)).astype(np.float32)
    rgb, layout, _ = _read(classification_figure(image, heat, FINDING))
    ev = _panel(rgb, layout, "evidence")
    px_col, px_row = ev.shape[1] / 40, ev.shape[0] / 30
    w = np.abs(ev[..., 0] - ev[..., 2]) * (np.abs(ev[..., 0] - ev[..., 2]) > 0.05)
    rr, cc = np.nonzero(w)
    centre = (np.average(rr, weights=w[rr, cc]), np.average(cc, weights=w[rr, cc]))
    # voxel centre (30, 22) sits at display ((22 + 0.5) * px_row, (30 + 0.5) * px_col), pixel centres at +0.5
    np.testing.assert_allclose(centre, ((22.5) * px_row - 0.5, (30.5) * px_col - 0.5), atol=1.0)


@pytest.mark.parametrize("direction,flip", [
    (((-1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)), lambda a: a[::-1]),  # i runs to the patient's right
    (((1.0, 0, 0), (0, -1.0, 0), (0, 0, 1.0)), lambda a: a[:, ::-1]),  # j runs anterior
])
def test_flipped_direction_shows_the_same_patient_the_same_way(direction, flip) -> None:
    plain = _slice_image()
    flipped = _slice_image(direction, np.ascontiguousarray(flip(plain.array)))
    # the same voxels in the same world positions (origin moved to the other end of the flipped axis)
    k = 0 if direction[0][0] < 0 else 1
    origin = [0.0, 0.0, 0.0]
    origin[k] = (plain.shape[k] - 1) * plain.spacing[k]
    flipped = Image(flipped.array, Geometry(plain.spacing, tuple(origin), direction), plain.provenance)
    np.testing.assert_allclose(flipped.world((39 - 10, 5, 0) if k == 0 else (10, 29 - 5, 0)), plain.world((10, 5, 0)))
    a, la, _ = _read(classification_figure(plain, None, FINDING))
    b, lb, _ = _read(classification_figure(flipped, None, FINDING))
    np.testing.assert_array_equal(_panel(a, la, "image"), _panel(b, lb, "image"))
    assert la["panels"][0]["labels"] == lb["panels"][0]["labels"] == {
        "left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_permuted_axes_are_put_back_and_labelled() -> None:
    plain = _slice_image()
    # index axis 0 now runs posterior (world y), axis 1 to the patient's left (world x): the array transposed
    direction = ((0.0, 1.0, 0), (1.0, 0.0, 0), (0, 0, 1.0))
    arr = np.ascontiguousarray(plain.array.transpose(1, 0, 2))
    permuted = Image(arr, Geometry((1.2, 0.8, 3.0), (0.0, 0.0, 0.0), direction), plain.provenance)
    np.testing.assert_allclose(permuted.world((5, 10, 0)), plain.world((10, 5, 0)))
    a, la, _ = _read(classification_figure(plain, None, FINDING))
    b, lb, _ = _read(classification_figure(permuted, None, FINDING))
    np.testing.assert_array_equal(_panel(a, la, "image"), _panel(b, lb, "image"))
    assert lb["panels"][0]["labels"] == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_oblique_labels_from_direction_cosines() -> None:
    c = np.cos(np.radians(30))
    s = np.sin(np.radians(30))
    direction = ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))  # in-plane rotation by 30 degrees
    views = display.patient_views(Geometry((1.0, 1.0, 1.0), (0, 0, 0), direction), (10, 10, 10))
    # screen right = +i = (cos, sin, 0): mostly L, then P; screen down = +j = (-sin, cos, 0): mostly P, then R
    assert views["axial"].labels == {"right": "LP", "left": "RA", "bottom": "PR", "top": "AL"}
    assert views["coronal"].labels["top"] == "S" and views["sagittal"].labels["left"] == "AL"
    assert display.direction_letters((0.0, 0.0, -1.0)) == "I"


def test_ct_window_by_body_part_and_mr_percentiles() -> None:
    a = np.linspace(-1000, 1000, 1001, dtype=np.float32).reshape(1001, 1, 1)
    ct = Image(a, Geometry.identity(3), Provenance(modality="CT", body_part="HEAD"))
    assert display.window_for(ct)[:2] == (0.0, 80.0)
    mr = Image(a, Geometry.identity(3), Provenance(modality="MR"))
    lo, hi, _ = display.window_for(mr)
    body = a.ravel()[1:]  # the minimum (air) left out
    assert (lo, hi) == pytest.approx(tuple(np.percentile(body, [0.5, 99.5])))


def _two_lesions() -> tuple[Image, np.ndarray]:
    a = np.full((48, 40, 24), 100.0, np.float32)
    mask = np.zeros(a.shape, bool)
    mask[8:14, 8:12, 17:21] = True  # small
    mask[28:40, 20:30, 6:16] = True  # large
    a[mask] = 500.0
    return Image(a, Geometry((1.0, 1.0, 2.0), (-20.0, 10.0, 5.0), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0))),
                 Provenance(modality="MR")), mask


def test_segmentation_figure_ids_volumes_and_views_through_largest_lesion() -> None:
    image, mask = _two_lesions()
    centre = lambda sl: tuple(float(v) for v in image.world([(s.start + s.stop - 1) / 2 for s in sl]))  # noqa: E731
    table = [{"lesion_id": 7, "volume_ml": 2.4, "longest_diameter_mm": 27.4, "centroid": str(centre(
                 (slice(28, 40), slice(20, 30), slice(6, 16))))},
             {"lesion_id": 3, "volume_ml": 0.192, "longest_diameter_mm": 9.11,
              "centroid": str(centre((slice(8, 14), slice(8, 12), slice(17, 21))))}]
    prob = mask.astype(np.float32) * 0.9
    finding = Finding("lesion", 0.9, False, None, "present")
    rgb, layout, text = _read(segmentation_figure(image, mask, finding, probability=prob, lesions=table))
    assert "#7 2.40 ml, longest 27.4 mm; #3 0.19 ml, longest 9.1 mm" in text and "ids as in lesions.csv" in text
    assert "views through the largest lesion at voxel (33, 24, 10)" in text
    axial = next(b for b in layout["panels"] if b["kind"] == "evidence" and b["row"] == 0)
    px = axial["width"] / 48
    notes = {t: (c, r) for t, c, r in axial["notes"]}
    assert set(notes) == {"#7"}  # the small lesion is not on the axial slice through the large one
    # id drawn just right of and above the large lesion's outline: columns 28..39 -> right edge 40 * px
    assert notes["#7"][0] == pytest.approx(40 * px - 1 + 3, abs=1.0)
    assert notes["#7"][1] == pytest.approx(20 * px - 1, abs=1.0)


def test_measured_lesions_against_brute_force() -> None:
    mask = np.zeros((10, 12, 14), bool)
    mask[1:4, 2:6, 3:8] = True  # 3 x 4 x 5 voxels
    mask[7, 9, 11] = True  # one voxel, not touching
    g = Geometry((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)))
    rows = lesion_table.measure(mask, g)
    assert [r["lesion_id"] for r in rows] == [1, 2]
    assert rows[0]["volume_ml"] == pytest.approx(60 * 6 / 1000)
    # outer corner to outer corner of the 3 x 4 x 5 voxel box (1 x 2 x 3 mm voxels); a lone voxel: its diagonal
    assert rows[0]["longest_diameter_mm"] == pytest.approx(np.sqrt(3 ** 2 + 8 ** 2 + 15 ** 2))
    assert rows[1]["longest_diameter_mm"] == pytest.approx(np.sqrt(1 + 4 + 9)) and rows[1]["volume_ml"] == pytest.approx(0.006)
    np.testing.assert_allclose(rows[0]["centroid"], (2.0, 3.5 * 2, 5.0 * 3))


def test_same_input_same_bytes_and_caption_numbers() -> None:
    image, mask = _two_lesions()
    heat = mask.astype(np.float32)
    one = classification_figure(image, heat, FINDING, title="case 1")
    assert one == classification_figure(image, heat, FINDING, title="case 1")
    text = png_text(one)
    assert "Software" not in text and not any(re.search(r"\d{4}-\d\d-\d\d", v) for v in text.values())
    assert "probability 0.873 (calibrated); decision at the operating point 0.420: POSITIVE" in text["Description"]
    assert "Referral: REFER - out of distribution (Mahalanobis 41.2)" in text["Description"]
    montage = montage_figure(image, heat, mask, FINDING)
    assert montage == montage_figure(image, heat, mask, FINDING)
    assert len(json.loads(png_text(montage)["medsight:layout"])["panels"]) == 8


def test_slide_figure_heat_and_top_tile_positions() -> None:
    thumb = np.full((300, 400, 3), 230, np.uint8)
    heat = np.zeros((30, 40), np.float32)
    heat[10:20, 25:35] = 1.0  # tiles of 10 x 10 thumbnail pixels
    rgb, layout, _ = _read(slide_figure(thumb, heat, Finding("tumour", 0.91, False, 0.5, "positive"),
                                        top_tiles=[(250.0, 100.0, 100.0, 100.0)]))
    ev = _panel(rgb, layout, "evidence")
    assert ev.shape[:2] == (384, 512)
    s = 512 / 400
    red = np.all(np.abs(ev - np.asarray(FINDING_COLOUR)) < 0.02, axis=-1)
    np.testing.assert_allclose(_bbox(red), (100 * s, 200 * s, 250 * s, 350 * s), atol=1.0)


def test_thumbnail_is_the_evidence_panel_shrunk() -> None:
    image, mask = _two_lesions()
    uri = evidence_thumbnail(image, finding_mask=mask, reference=mask)
    im = PILImage.open(io.BytesIO(__import__("base64").b64decode(uri.split(",", 1)[1])))
    assert max(im.size) == 192 and im.size == (192, round(40 / 48 * 192))


def test_caption_shows_enough_digits_to_tell_probability_from_threshold() -> None:
    from medsight.explain.evidence import caption

    line = caption(Finding("lesion", 0.443648, False, 0.4437767, "negative"))[0]
    assert "probability 0.4436 (not calibrated); decision at the operating point 0.4438: NEGATIVE" in line


def test_lesion_table_columns_as_segmentation_writes_them() -> None:
    """lesions.csv's per-axis LPS centroid columns and per-lesion referral reach the matching and the caption."""
    import pandas as pd

    from medsight.explain.evidence import caption

    image, mask = _two_lesions()
    big = image.world((33.5, 24.5, 10.5))
    small = image.world((10.5, 9.5, 18.5))
    table = pd.DataFrame([
        {"lesion_id": 1, "label": "lesion", "volume_ml": 2.4, "longest_diameter_mm": 27.4, "centroid_l_mm": big[0],
         "centroid_p_mm": big[1], "centroid_s_mm": big[2], "decision": "accept", "reasons": ""},
        {"lesion_id": 2, "label": "lesion", "volume_ml": 0.192, "longest_diameter_mm": 9.11, "centroid_l_mm": small[0],
         "centroid_p_mm": small[1], "centroid_s_mm": small[2], "decision": "refer", "reasons": "low confidence"}])
    rows = lesion_table.normalise(table)
    np.testing.assert_allclose(rows[1]["centroid"], small)
    labelled, n = lesion_table.components(mask)
    ids = lesion_table.match(rows, labelled, n, image.geometry)
    assert ids == {int(labelled[10, 9, 18]): 2, int(labelled[33, 24, 10]): 1}
    text = caption(Finding("lesion"), rows)[2]
    assert text.endswith("#1 2.40 ml, longest 27.4 mm; #2 0.19 ml, longest 9.1 mm (REFER: low confidence)")


def test_three_views_of_a_flipped_volume_are_the_same_pictures() -> None:
    """A block on the patient's left, anterior and superior shows there in every view, whatever the axis signs."""
    a = np.full((30, 24, 20), 100.0, np.float32)
    a[20:26, 3:8, 14:18] = 900.0  # i -> L, j -> P, k -> S: left, anterior, superior
    g = Geometry((1.0, 1.0, 1.5), (0.0, 0.0, 0.0), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)))
    plain = Image(a, g, Provenance(modality="MR"))
    d = ((-1.0, 0, 0), (0, 1.0, 0), (0, 0, -1.0))  # i towards the right, k towards the feet
    flipped = Image(np.ascontiguousarray(a[::-1, :, ::-1]), Geometry(g.spacing, (29.0, 0.0, 19 * 1.5), d),
                    plain.provenance)
    np.testing.assert_allclose(flipped.world((29 - 20, 3, 19 - 14)), plain.world((20, 3, 14)))
    heat = (a > 500).astype(np.float32)
    ra, la, _ = _read(classification_figure(plain, heat, FINDING))
    rb, lb, _ = _read(classification_figure(flipped, heat[::-1, :, ::-1], FINDING))
    for row, (name, want) in enumerate((("axial", (0, 1)), ("coronal", (0, 1)), ("sagittal", (0, 0)))):
        pa, pb = _panel(ra, la, "image", row), _panel(rb, lb, "image", row)
        np.testing.assert_array_equal(pa, pb)
        rr, cc = np.nonzero(pa[..., 0] > 0.5)
        # (top half?, right half?): axial and coronal show the left side on the right, anterior / superior on
        # top; sagittal shows anterior on the left and superior on top
        assert (rr.mean() > pa.shape[0] / 2, cc.mean() > pa.shape[1] / 2) == (bool(want[0]), bool(want[1])), name
    assert [p["labels"]["left"] for p in la["panels"][::2]] == ["R", "R", "A"]
    assert [p["labels"]["top"] for p in lb["panels"][::2]] == ["A", "S", "S"]
