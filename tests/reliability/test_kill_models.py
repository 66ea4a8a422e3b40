"""``kill -9`` at random points of ``train`` and ``predict`` (real processes), then a rerun: the same weights and
the same label maps as an uninterrupted run, and no half-written model or prediction left where a user looks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsight.engine.checkpoint import load_checkpoint
from medsight.synthetic.toy import make_toy_dataset

from .processes import kill_after, run_medsight

KILL_AT = (0.3, 0.6, 0.9)  # shares of an uninterrupted run's wall time


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kill_models")
    data = make_toy_dataset(root / "toy", n_cases=10, shape=(20, 16, 12), channels=1)
    home = root / "home"
    run_medsight(home, "plan", str(data), "--memory-gb", "0.02", "--filters", "4", "--epochs", "3", "--iterations", "2")
    return data, home


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(model_dir / "fold_0" / "model_final.pt")["model"]


@pytest.mark.slow
def test_train_and_predict_killed_then_rerun_equal_uninterrupted(toy: tuple[Path, Path], tmp_path: Path) -> None:
    data, home = toy
    ref = tmp_path / "ref_model"
    whole = run_medsight(home, "train", str(data), "--fold", "0", "--model-dir", str(ref))
    want = _weights(ref)
    landed = 0
    for i, share in enumerate(KILL_AT):
        out = tmp_path / f"model{i}"
        landed += kill_after(home, share * whole, "train", str(data), "--fold", "0", "--model-dir", str(out))
        if (out / "manifest.json").exists():  # a package is listed only once complete
            assert (out / "fold_0" / "model_final.pt").is_file()
        run_medsight(home, "train", str(data), "--fold", "0", "--model-dir", str(out))
        got = _weights(out)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), f"kill {share}"
    assert landed >= 2, "the kills all came after training ended: the test proved nothing"

    images = data / "imagesTr"
    pref = tmp_path / "ref_pred"
    whole = run_medsight(home, "predict", str(ref), str(images), str(pref), "--no-mirror")
    maps = {p.name: np.asarray(nib.load(p).dataobj) for p in pref.glob("*.nii.gz")}
    assert len(maps) == 10
    landed = 0
    for i, share in enumerate(KILL_AT):
        out = tmp_path / f"pred{i}"
        landed += kill_after(home, share * whole, "predict", str(ref), str(images), str(out), "--no-mirror")
        for p in out.glob("*.nii.gz") if out.exists() else ():  # whatever is there reads in full
            assert np.array_equal(np.asarray(nib.load(p).dataobj), maps[p.name]), p.name
        run_medsight(home, "predict", str(ref), str(images), str(out), "--no-mirror")
        got = {p.name: np.asarray(nib.load(p).dataobj) for p in out.glob("*.nii.gz")}
        assert got.keys() == maps.keys() and all(np.array_equal(got[k], maps[k]) for k in maps)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    assert landed >= 2, "the kills all came after prediction ended: the test proved nothing"
