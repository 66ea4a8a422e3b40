"""The simulated slide set is the same whether it is built slide by slide or with the pipelined worker threads
(issue 30: the demo's slide build overlaps the random draws with the tumour and the pyramid writing)."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from medsight.synthetic.slides import SOURCE_MPP, build_slide_set, load_source, make_slide, write_pyramid

# sha256 of make_slide's pixels for default_rng(5), piece 600, labels (1, 0, 1): computed by the code before the
# pipelined rewrite (commit 854a7e0), with constraints.txt's numpy 2.4.6 / scikit-image 0.26.0
BEFORE = ("0142157c464e831b31a5d09516a1d05806e1799b4137ece26358740a061f82c5",
          "c648a16b8afad2296970d3f8680d2fd1f320ee7d1bb06f26a5e21a618654ed1a",
          "779692ecf79e0f77df1e690615cb36fe59bed6b3757c23a73c894868f1451c5d")


def test_make_slide_pixels_unchanged_by_the_rewrite() -> None:
    src, rng = load_source(), np.random.default_rng(5)
    got = []
    for positive in (True, False, True):
        img, ring = make_slide(src, rng, positive, 600)
        assert (ring is not None) == positive
        got.append(hashlib.sha256(img.tobytes()).hexdigest())
    assert tuple(got) == BEFORE


def test_threaded_build_writes_the_sequential_slides(tmp_path) -> None:  # noqa: ANN001
    made = build_slide_set(tmp_path / "set", n_patients=2, slides_per_patient=2, seed=3, piece=520, progress=False)
    # the sequential replay: build_slide_set's draws (labels first, then one make_slide per slide), no threads
    rng = np.random.default_rng(3)
    labels = np.zeros(4, int)
    labels[rng.permutation(4)[:2]] = 1
    assert [s.label for s in made] == labels.tolist()
    for s in made:
        img, ring = make_slide(load_source(), rng, bool(s.label), 520)
        ref = write_pyramid(tmp_path / "ref" / f"{s.slide_id}.tif", img, SOURCE_MPP)
        assert s.path.read_bytes() == ref.read_bytes()
        assert (s.tumour_geojson is not None) == (ring is not None)
        if ring is not None:
            geometry = json.loads(s.tumour_geojson.read_text())["features"][0]["geometry"]
            assert geometry["coordinates"] == [[ring]]
