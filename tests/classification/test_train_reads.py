"""Training reads only its training and validation rows (issue 33: the demo's 1,237 test slices, 40% of its
manifest, were read and preprocessed by every training run and then again by the evaluation)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from medsight.classification.train import TrainConfig, train_classifier

CFG = dict(backbone="resnet10-slim", input_size=(32, 32), epochs=1, batch_size=16, lr=3e-3, augment=False)


def test_test_rows_are_never_read(square_data: tuple[Path, list], tmp_path: Path) -> None:
    manifest, _ = square_data
    table = pd.read_csv(manifest).head(60)
    table["image"] = [str(manifest.parent / p) for p in table["image"]]
    table["split"] = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    for i in range(50, 60):  # test rows point at files that exist but are not images: reading one fails
        bad = tmp_path / f"test{i}.nii.gz"
        bad.write_bytes(b"not a NIfTI file")
        table.loc[i, "image"] = str(bad)
    split = tmp_path / "manifest.csv"
    table.to_csv(split, index=False)
    torch.set_num_threads(1)
    out = train_classifier(split, tmp_path / "model", TrainConfig(**CFG, labels=["square"]), quiet=True)
    assert out["n_train"] == 40 and out["n_val"] == 10
    # the same manifest with a broken training row does fail: the test above is not passing by accident
    table.loc[0, "image"] = str(tmp_path / "test50.nii.gz")
    table.to_csv(split, index=False)
    with pytest.raises(Exception):  # noqa: B017 - whichever read error: the point is that it is read
        train_classifier(split, tmp_path / "model2", TrainConfig(**CFG, labels=["square"]), quiet=True)
