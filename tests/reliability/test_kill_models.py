"""``kill -9`` at random points of ``train`` and ``predict`` (real processes), then a rerun: the same weights and
the same label maps as an uninterrupted run, and no half-written model or prediction left where a user looks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsight.engine.checkpoint import load_checkpoint
from medsight.synthetic.toy import make_toy_dataset

KILL_AT = (0.3, 0.6, 0.9)  # shares of an uninterrupted run's wall time


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MEDSIGHT_HOME": str(home)}


def _run(home: Path, *argv: str) -> float:
    import time

    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "medsight.cli.main", "-q", *argv], env=_env(home),
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    return time.perf_counter() - t


def _kill_after(home: Path, seconds: float, *argv: str) -> bool:
    p = subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "-q", *argv], env=_env(home),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return True


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kill_models")
    data = make_toy_dataset(root / "toy", n_cases=10, shape=(20, 16, 12), channels=1)
    home = root / "home"
    _run(home, "plan", str(data), "--memory-gb", "0.02", "--filters", "4", "--epochs", "3", "--iterations", "2")
    return data, home


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(model_dir / "fold_0" / "model_final.pt")["model"]


@pytest.mark.slow
def test_train_and_predict_killed_then_rerun_equal_uninterrupted(toy: tuple[Path, Path], tmp_path: Path) -> None:
    data, home = toy
    ref = tmp_path / "ref_model"
    whole = _run(home, "train", str(data), "--fold", "0", "--model-dir", str(ref))
    want = _weights(ref)
    landed = 0
    for i, share in enumerate(KILL_AT):
        out = tmp_path / f"model{i}"
        landed += _kill_after(home, share * whole, "train", str(data), "--fold", "0", "--model-dir", str(out))
        if (out / "manifest.json").exists():  # a package is listed only once complete
            assert (out / "fold_0" / "model_final.pt").is_file()
        _run(home, "train", str(data), "--fold", "0", "--model-dir", str(out))
        got = _weights(out)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), f"kill {share}"
    assert landed >= 2, "the kills all came after training ended: the test proved nothing"

    images = data / "imagesTr"
    pref = tmp_path / "ref_pred"
    whole = _run(home, "predict", str(ref), str(images), str(pref), "--no-mirror")
    maps = {p.name: np.asarray(nib.load(p).dataobj) for p in pref.glob("*.nii.gz")}
    assert len(maps) == 10
    landed = 0
    for i, share in enumerate(KILL_AT):
        out = tmp_path / f"pred{i}"
        landed += _kill_after(home, share * whole, "predict", str(ref), str(images), str(out), "--no-mirror")
        for p in out.glob("*.nii.gz") if out.exists() else ():  # whatever is there reads in full
            assert np.array_equal(np.asarray(nib.load(p).dataobj), maps[p.name]), p.name
        _run(home, "predict", str(ref), str(images), str(out), "--no-mirror")
        got = {p.name: np.asarray(nib.load(p).dataobj) for p in out.glob("*.nii.gz")}
        assert got.keys() == maps.keys() and all(np.array_equal(got[k], maps[k]) for k in maps)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    assert landed >= 2, "the kills all came after prediction ended: the test proved nothing"
