"""The embedded demo dataset: deterministic, cached, honest manifest (checked against the label maps)."""

from __future__ import annotations

import csv
import json
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medsight.data.dataset import load_dataset, validate
from medsight.synthetic.demo import LABELS, MANIFEST_COLUMNS, build_demo_dataset, plan_cases
from medsight.errors import DatasetError
from medsight.files import sha256_file


def test_demo_build_is_deterministic_cached_and_valid(tmp_path):
    a = build_demo_dataset(tmp_path / "a", n_cases=4, seed=3, quiet=True)
    b = build_demo_dataset(tmp_path / "b", n_cases=4, seed=3, quiet=True)
    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    assert len(files) == 8
    assert all(sha256_file(a / f) == sha256_file(b / f) for f in files)
    t = time.perf_counter()
    build_demo_dataset(tmp_path / "a", n_cases=4, seed=3, quiet=True)
    assert time.perf_counter() - t < 0.5  # cached

    meta = json.loads((a / "dataset.json").read_text())
    assert meta["labels"] == LABELS and meta["channel_names"] == {"0": "T1"}
    assert "SIMULATED" in meta["description"]
    ds = load_dataset(a)
    validate(ds)  # label values, shapes and spacings agree
    rows = list(csv.DictReader(open(a / "manifest.csv")))
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert {r["site"] for r in rows} == {"site_A", "site_B", "site_C"}
    for r in rows:
        lab = nib.load(str(a / r["label"]))
        img = nib.load(str(a / r["image"]))
        assert np.allclose(lab.affine, img.affine)
        voxels = np.asarray(lab.dataobj)
        voxel_ml = float(np.prod(lab.header.get_zooms())) / 1000
        # recorded lesion volume = lesion voxels x voxel volume, worked from the written label map
        assert abs(float(r["lesion_volume_ml"]) - (voxels == 3).sum() * voxel_ml) < 1e-3
        assert (r["has_lesion"] == "1") == bool((voxels == 3).any())
        if r["has_lesion"] == "1":
            assert 3 <= float(r["lesion_diameter_mm"]) <= 30 and 0.5 <= float(r["lesion_cnr"]) <= 4
        assert (voxels == 1).sum() > 1000 and (voxels == 2).sum() > 1000  # grey and white matter present
    # sites differ in resolution: site_B has thicker slices
    zooms = {r["site"]: nib.load(str(a / r["image"])).header.get_zooms() for r in rows}
    assert zooms["site_B"][2] > zooms["site_A"][2]


def test_case_plan_shares_and_patients():
    specs = plan_cases(40, seed=0)
    sites = [s.site.name for s in specs]
    assert (sites.count("site_A"), sites.count("site_B"), sites.count("site_C")) == (16, 14, 10)
    by_patient: dict[str, set[str]] = {}
    for s in specs:
        by_patient.setdefault(s.patient_id, set()).add(s.site.name)
    assert all(len(v) == 1 for v in by_patient.values())  # a patient is scanned at one site
    assert len(by_patient) < len(specs)  # some patients were scanned twice
    assert 0.3 < np.mean([s.has_lesion for s in specs]) < 0.7


def test_enhancing_lesion_profile_gives_bright_lesions_and_is_recorded(tmp_path):
    root = build_demo_dataset(tmp_path / "e", n_cases=3, seed=1, quiet=True, lesion_share=1.0,
                              lesion_profile="enhancing")
    assert json.loads((root / "dataset.json").read_text())["medsight"]["lesion_profile"]["name"] == "enhancing"
    assert json.loads((root / ".demo_build.json").read_text())["lesion_profile"] == "enhancing"
    for r in csv.DictReader(open(root / "manifest.csv")):
        assert 6.0 <= float(r["lesion_cnr"]) <= 14.0
        img = np.asarray(nib.load(str(root / r["image"])).dataobj, dtype=float)
        lab = np.asarray(nib.load(str(root / r["label"])).dataobj)
        core = ndimage.binary_erosion(lab == 3)
        inside = img[core] if core.any() else img[lab == 3]
        # brighter than white matter, the brightest tissue of a T1 brain (bias field and noise included)
        assert np.median(inside) > 1.1 * np.median(img[lab == 2])


def test_unknown_lesion_profile_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown lesion profile 'flair'.*faint, enhancing"):
        build_demo_dataset(tmp_path / "x", n_cases=3, lesion_profile="flair", quiet=True)


def test_a_patient_subset_builds_the_same_cases_as_the_whole_build(tmp_path):
    """build_demo_dataset(patients=...) (the recipe regression test builds 51 of 200 cases this way): the subset's
    cases are byte-identical to the whole build's, its manifest rows equal theirs, and a stamp tells the two apart."""
    whole = build_demo_dataset(tmp_path / "whole", n_cases=5, seed=3, quiet=True)
    rows = list(csv.DictReader(open(whole / "manifest.csv")))
    pick = sorted({r["patient_id"] for r in rows})[1::2]  # every second patient, not the first
    part = build_demo_dataset(tmp_path / "part", n_cases=5, seed=3, quiet=True, patients=pick)
    got = list(csv.DictReader(open(part / "manifest.csv")))
    assert got == [r for r in rows if r["patient_id"] in pick] and 0 < len(got) < len(rows)
    for r in got:
        assert sha256_file(part / r["image"]) == sha256_file(whole / r["image"])
        assert sha256_file(part / r["label"]) == sha256_file(whole / r["label"])
    assert json.loads((part / ".demo_build.json").read_text())["patients"] == pick
    # the whole build in a folder that holds a subset is rebuilt, not taken for the subset
    assert len(list(csv.DictReader(open(build_demo_dataset(tmp_path / "part", n_cases=5, seed=3, quiet=True)
                                        / "manifest.csv")))) == len(rows)
    with pytest.raises(DatasetError, match="P0999"):
        build_demo_dataset(tmp_path / "x", n_cases=5, seed=3, quiet=True, patients=["P0999"])
