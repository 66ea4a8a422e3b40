"""Dataset reading and the bad-input checks that must stop a run, naming the case, before training."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medsight.data.dataset import load_dataset, validate
from medsight.data.manifest import read_manifest
from medsight.synthetic.toy import make_toy_dataset
from medsight.errors import DatasetError, InputNotFoundError


@pytest.fixture()
def toy(tmp_path):
    return make_toy_dataset(tmp_path / "toy", n_cases=4)


def _rewrite(path, fn):
    img = nib.load(str(path))
    data, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_reads_msd_layout_with_manifest_and_channels(toy):
    ds = load_dataset(toy)
    assert [c.case_id for c in ds.cases] == ["toy_000", "toy_001", "toy_002", "toy_003"]
    assert ds.channels == {0: "T1", 1: "T2"}
    assert ds.labels == {"background": 0, "ball": 1, "slab": 2}
    assert ds.case("toy_003").patient_id == "patient_1" and ds.case("toy_003").site == "site_B"
    assert all(len(c.images) == 2 for c in ds.cases)
    validate(ds)


def test_reads_folder_layout_without_manifest(toy):
    (toy / "manifest.csv").unlink()
    ds = load_dataset(toy)
    assert [c.patient_id for c in ds.cases] == [c.case_id for c in ds.cases]  # each case its own patient
    assert ds.cases[0].images[1].name == "toy_000_0001.nii.gz"


def test_msd_style_labels_are_accepted(toy):
    meta = json.loads((toy / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "ball", "2": "slab"}
    (toy / "dataset.json").write_text(json.dumps(meta))
    assert load_dataset(toy).labels == {"background": 0, "ball": 1, "slab": 2}


def test_label_value_not_in_dataset_json_names_the_case(toy):
    def add_seven(d, a):
        d = d.copy()
        d[0, 0, 0] = 7
        return d, a

    _rewrite(toy / "labelsTr/toy_002.nii.gz", add_seven)
    with pytest.raises(DatasetError, match=r"case toy_002: label values \[7\]"):
        validate(load_dataset(toy))


def test_shape_mismatch_names_the_case(toy):
    _rewrite(toy / "labelsTr/toy_001.nii.gz", lambda d, a: (d[:-2], a))
    with pytest.raises(DatasetError, match="case toy_001: label has shape"):
        validate(load_dataset(toy))


def test_spacing_mismatch_names_the_case(toy):
    def stretch(d, a):
        a[:3, 2] *= 1.5
        return d, a

    _rewrite(toy / "imagesTr/toy_003_0001.nii.gz", stretch)
    with pytest.raises(DatasetError, match="case toy_003: channel toy_003_0001.nii.gz spacing"):
        validate(load_dataset(toy))


def test_missing_channel_names_the_case(toy):
    (toy / "manifest.csv").unlink()
    (toy / "imagesTr/toy_002_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case toy_002 lacks channel file"):
        load_dataset(toy)


def test_missing_channel_in_manifest_names_the_case(toy):
    (toy / "imagesTr/toy_001_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case toy_001: image file .* is missing"):
        load_dataset(toy)


def test_empty_dataset(tmp_path):
    root = make_toy_dataset(tmp_path / "t", n_cases=1, manifest=False)
    for p in (root / "imagesTr").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="no cases"):
        load_dataset(root)
    with pytest.raises(InputNotFoundError, match="no dataset.json"):
        load_dataset(tmp_path)


def test_manifest_duplicate_and_missing_columns(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("case_id,image,label,patient_id,site\na,x,y,p1,s\na,x,y,p2,s\n")
    with pytest.raises(DatasetError, match="row 3: case_id 'a' appears twice"):
        read_manifest(p)
    p.write_text("case_id,image\na,x\n")
    with pytest.raises(DatasetError, match="lacks column"):
        read_manifest(p)


def test_cli_train_stops_before_training_on_bad_label(toy, tmp_path):
    from click.testing import CliRunner

    from medsight.cli.main import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["-q", "plan", str(toy), "--memory-gb", "0.05"]).exit_code == 0

    def bad(d, a):
        d = d.copy()
        d[1, 1, 1] = 9
        return d, a

    _rewrite(toy / "labelsTr/toy_000.nii.gz", bad)
    res = runner.invoke(cli, ["-q", "train", str(toy), "--model-dir", str(tmp_path / "m"), "--epochs", "1"])
    assert isinstance(res.exception, DatasetError) and "case toy_000" in str(res.exception)
    assert not list((tmp_path / "m").glob("fold_*"))  # nothing trained
