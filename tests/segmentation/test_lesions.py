"""Measured lesions (lesions.csv) on hand-built volumes with known spacing, direction and origin."""

from __future__ import annotations

import csv
import io
import itertools

import numpy as np
import pytest

from medsight.image import Geometry
from medsight.segmentation.lesions import longest_diameter_mm, measure_lesions

SPACING = (0.5, 2.0, 3.0)
ORIGIN = (10.0, -5.0, 3.0)


def _rotation(a: float, b: float) -> np.ndarray:
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


GEOM = Geometry(SPACING, ORIGIN, tuple(tuple(float(v) for v in row) for row in _rotation(0.4, -0.7)))


def _probabilities(labels: np.ndarray, lesion_p: np.ndarray) -> np.ndarray:
    """4 classes; the lesion class takes ``lesion_p`` on lesion voxels and the rest goes to white matter (2)."""
    prob = np.zeros((4, *labels.shape), np.float32)
    prob[0] = 1.0
    les = labels == 3
    prob[0][les] = 0.0
    prob[3][les] = lesion_p[les]
    prob[2][les] = 1.0 - lesion_p[les]
    return prob


def test_box_lesion_volume_diameter_centroid_in_world_space() -> None:
    labels = np.zeros((12, 8, 6), np.uint8)
    labels[2:6, 3:6, 1:3] = 3  # 4 x 3 x 2 voxels
    p = np.full(labels.shape, 0.9, np.float32)
    p[2, 3, 1] = 0.3
    out, table = measure_lesions(labels, _probabilities(labels, p), GEOM, {3: "lesion"}, min_volume_ml=0.0)
    assert np.array_equal(out, labels) and len(table.rows) == 1
    row = table.rows[0]
    assert row["volume_ml"] == pytest.approx(24 * 0.5 * 2.0 * 3.0 / 1000)
    # caliper (Feret) diameter of the voxel boxes: the box's outer corner-to-corner diagonal, 4 x 3 x 2 voxels of
    # 0.5 x 2 x 3 mm; a rotation does not change lengths
    diagonal = np.sqrt((4 * 0.5) ** 2 + (3 * 2.0) ** 2 + (2 * 3.0) ** 2)
    assert row["longest_diameter_mm"] == pytest.approx(diagonal, abs=1e-3)
    centre_index = np.array([3.5, 4.0, 1.5])
    want = np.asarray(ORIGIN) + GEOM.direction_matrix @ (np.asarray(SPACING) * centre_index)
    assert [row["centroid_l_mm"], row["centroid_p_mm"], row["centroid_s_mm"]] == pytest.approx(want, abs=1e-3)
    assert row["mean_probability"] == pytest.approx((23 * 0.9 + 0.3) / 24, abs=1e-4)
    assert row["max_probability"] == pytest.approx(0.9, abs=1e-4)
    ent = lambda q: -(q * np.log(q) + (1 - q) * np.log(1 - q))  # noqa: E731 - two-class entropy in nats
    assert row["mean_entropy"] == pytest.approx((23 * ent(0.9) + ent(0.3)) / 24, abs=1e-4)


def test_longest_diameter_of_a_ball_matches_all_corner_pairs() -> None:
    idx = np.indices((15, 13, 9)).reshape(3, -1).T
    world = GEOM.index_to_world(idx.astype(float)).reshape(15, 13, 9, 3)
    centre = world[7, 6, 4]
    mask = np.linalg.norm(world - centre, axis=-1) <= 9.0
    offsets = np.array(list(itertools.product((-0.5, 0.5), repeat=3)))
    corners = GEOM.index_to_world((np.argwhere(mask)[:, None, :] + offsets).reshape(-1, 3))
    brute = max(np.linalg.norm(a - b) for a, b in itertools.combinations(np.unique(corners, axis=0), 2))
    assert longest_diameter_mm(mask, GEOM) == pytest.approx(brute, rel=1e-9)


def test_one_voxel_and_one_row_measure_their_voxel_extent() -> None:
    """A one-voxel lesion is its voxel's diagonal long (not 0 mm); a row of n voxels along an axis is n voxels
    long in-plane, plus the other two edges: sqrt((n s0)^2 + s1^2 + s2^2)."""
    one = np.zeros((5, 5, 5), bool)
    one[2, 2, 2] = True
    assert longest_diameter_mm(one, GEOM) == pytest.approx(np.sqrt(0.5 ** 2 + 2.0 ** 2 + 3.0 ** 2))
    row = np.zeros((12, 5, 5), bool)
    row[1:9, 2, 2] = True  # 8 voxels along the 0.5 mm axis
    assert longest_diameter_mm(row, GEOM) == pytest.approx(np.sqrt(4.0 ** 2 + 2.0 ** 2 + 3.0 ** 2))
    assert longest_diameter_mm(np.zeros((3, 3, 3), bool), GEOM) == 0.0


def test_small_lesions_dropped_and_counted_and_low_confidence_referred() -> None:
    labels = np.zeros((20, 10, 6), np.uint8)
    labels[1:5, 1:5, 1:4] = 3  # confident lesion
    labels[10:14, 1:5, 1:4] = 3  # unsure lesion
    labels[17, 8, 5] = 3  # one voxel: below the minimum
    p = np.full(labels.shape, 0.95, np.float32)
    p[10:14, 1:5, 1:4] = 0.55
    voxel_ml = 0.5 * 2.0 * 3.0 / 1000
    out, table = measure_lesions(labels, _probabilities(labels, p), GEOM, {3: "lesion"}, min_volume_ml=2 * voxel_ml)
    assert table.n_dropped == 1 and table.dropped_volume_ml == pytest.approx(voxel_ml)
    assert out[17, 8, 5] == 2  # the most probable other class
    assert [r["decision"] for r in table.rows] == ["accept", "refer"]
    assert "low confidence" in table.rows[1]["reasons"]
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert len(rows) == 2 and float(rows[0]["volume_ml"]) == pytest.approx(48 * voxel_ml)
    assert table.summary()["n_referred"] == 1


@pytest.mark.slow
def test_predict_cli_writes_lesions_csv_consistent_with_label_map(tmp_path) -> None:
    import json

    import nibabel as nib
    from click.testing import CliRunner
    from scipy import ndimage

    from medsight.cli.main import cli
    from medsight.synthetic.toy import make_toy_dataset

    root = make_toy_dataset(tmp_path / "Dataset002_Les", n_cases=10, shape=(24, 20, 16))
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "lesion": 1, "slab": 2}  # the bright ball becomes the lesion class
    (root / "dataset.json").write_text(json.dumps(meta))
    runner = CliRunner()
    for args in (["plan", str(root), "--memory-gb", "0.05", "--filters", "8", "--epochs", "3", "--iterations", "5"],
                 ["train", str(root), "--fold", "0", "--model-dir", str(tmp_path / "model")],
                 ["predict", str(tmp_path / "model"), str(root / "imagesTr"), str(tmp_path / "pred")]):
        r = runner.invoke(cli, ["-q", *args])
        assert r.exit_code == 0, r.output
    plan = json.loads((tmp_path / "model/plan.json").read_text())
    min_ml = plan["postprocess"]["min_lesion_volume_ml"]
    rule = tmp_path / "model/lesion_detection.json"  # fitted on validation lesions: its minimum volume replaces it
    if rule.is_file():
        min_ml = json.loads(rule.read_text())["min_volume_ml"]
    assert plan["postprocess"]["lesion_labels"] == {"1": "lesion"}
    found = 0
    for k in range(10):
        pred = nib.load(str(tmp_path / f"pred/toy_{k:03d}.nii.gz"))
        lab = np.asarray(pred.dataobj) == 1
        comp, n = ndimage.label(lab, np.ones((3, 3, 3)))
        voxel_ml = float(np.prod(pred.header.get_zooms()[:3])) / 1000
        sizes = np.bincount(comp.ravel())[1:] * voxel_ml
        assert (sizes >= min_ml).all()  # smaller ones were removed from the label map
        rows = list(csv.DictReader(open(tmp_path / f"pred/toy_{k:03d}_lesions.csv")))
        assert len(rows) == n
        assert sorted(float(r["volume_ml"]) for r in rows) == pytest.approx(sorted(sizes), abs=1e-5)
        found += len(rows)
    assert found > 0  # the bright ball is found somewhere, so the check above is not vacuous
