"""A bad manifest stops before training with a DatasetError naming the CSV row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsight.classification.manifest import read_manifest
from medsight.classification.train import TrainConfig, train_classifier
from medsight.errors import DatasetError


def _write(tmp_path: Path, text: str) -> Path:
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    p = tmp_path / "m.csv"
    p.write_text(text)
    return p


def test_missing_file_names_row(tmp_path: Path) -> None:
    m = _write(tmp_path, "image,patient_id,site,lesion\na.nii.gz,P1,s,0\nmissing.nii.gz,P2,s,1\n")
    with pytest.raises(DatasetError, match=r"row 3: image missing.nii.gz does not exist"):
        read_manifest(m)


def test_unknown_binary_label_names_row(tmp_path: Path) -> None:
    m = _write(tmp_path, "image,patient_id,site,lesion,other\na.nii.gz,P1,s,0,1\nb.nii.gz,P2,s,2,0\n")
    with pytest.raises(DatasetError, match=r"row 3: label lesion='2' is not 0/1"):
        read_manifest(m)


def test_unknown_multiclass_value_names_row(tmp_path: Path) -> None:
    m = _write(tmp_path, "image,patient_id,site,grade\na.nii.gz,P1,s,0\nb.nii.gz,P2,s,mild\nc.nii.gz,P3,s,2\n")
    with pytest.raises(DatasetError, match=r"row 3: label grade='mild' is not a class index"):
        read_manifest(m, task="multiclass")


def test_patient_in_two_splits_names_row(tmp_path: Path) -> None:
    m = _write(tmp_path, "image,patient_id,site,lesion,split\na.nii.gz,P1,s,0,train\nb.nii.gz,P2,s,1,val\n"
                         "c.nii.gz,P1,s,1,test\n")
    with pytest.raises(DatasetError, match=r"row 4: patient P1 is in split 'test' but also in 'train'"):
        read_manifest(m)


def test_training_stops_before_reading_images(tmp_path: Path) -> None:
    """The files are not images at all: a manifest error must come first, not a read error mid-training."""
    m = _write(tmp_path, "image,patient_id,site,lesion\na.nii.gz,P1,s,0\nb.nii.gz,P2,s,yes?\n")
    with pytest.raises(DatasetError, match="row 3"):
        train_classifier(m, tmp_path / "model", TrainConfig())
    assert not (tmp_path / "model").exists()


def test_tasks_and_label_matrix(tmp_path: Path) -> None:
    m = _write(tmp_path, "image,patient_id,site,lesion,large,split\na.nii.gz,P1,s,0,0,train\n"
                         "b.nii.gz,P2,s,1,1,val\nc.nii.gz,P3,s,1,0,train\n")
    man = read_manifest(m)
    assert man.task == "multilabel" and man.labels == ["lesion", "large"]
    np.testing.assert_array_equal(man.y, [[0, 0], [1, 1], [1, 0]])
    m2 = _write(tmp_path, "image,patient_id,site,grade\na.nii.gz,P1,s,0\nb.nii.gz,P2,s,2\nc.nii.gz,P3,s,1\n")
    man2 = read_manifest(m2)
    assert man2.task == "multiclass" and man2.classes == ["0", "1", "2"]
    np.testing.assert_array_equal(man2.y, [0, 2, 1])
