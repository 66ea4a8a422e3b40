"""``kill -9`` at random points of ``train-cls`` and ``predict-cls`` (real processes), then a rerun: the same
weights, probabilities and heatmaps as an uninterrupted run, and nothing half-written left beside the outputs."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.classification.model_io import load_classifier
from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti

from .processes import kill_after, run_medsight


N_KILLS = 3
N_PREDICT = 16
TRAIN = ("--epochs", "3", "--batch-size", "16", "--backbone", "resnet10", "--input-size", "32,32", "--seed", "1")


def _kill_points(whole: float, seed: int) -> list[float]:
    """Random points in the second half of the first 95% of a run (start-up, mostly imports, is the first ~40%)."""
    rng = random.Random(seed)
    return sorted(whole * rng.uniform(0.45, 0.95) for _ in range(N_KILLS))


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 noise images of 32x32 (one-slice NIfTI), every second with a bright square; 24 patients."""
    root = tmp_path_factory.mktemp("kill_cls") / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        a = rng.normal(100.0, 10.0, (32, 32)).astype(np.float32)
        ci, cj = (int(v) for v in rng.integers(2, 22, 2))
        a[ci:ci + 8, cj:cj + 8] += 60.0 * (i % 2)
        write_nifti(Image(a[:, :, None], Geometry.identity(3)), root / f"img{i:03d}.nii.gz", sidecar=False)
        rows.append(f"img{i:03d}.nii.gz,P{i // 2:03d},s1,{i % 2}\n")
    manifest = root / "manifest.csv"
    manifest.write_text("image,patient_id,site,square\n" + "".join(rows))
    return manifest


def _weights(model: Path) -> dict[str, torch.Tensor]:
    return load_classifier(model).model.state_dict()


@pytest.mark.slow
def test_train_cls_killed_then_rerun_equals_uninterrupted(squares: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ref = tmp_path / "ref"
    whole = run_medsight(home, "train-cls", str(squares), "--out", str(ref), *TRAIN)
    want = _weights(ref)
    # the first run is cold (imports, file cache): in CI 2 of 3 kill points once came after training ended, so
    # time a warm run too and take the shorter (as the predict-cls test does)
    whole = min(whole, run_medsight(home, "train-cls", str(squares), "--out", str(tmp_path / "warm"), *TRAIN))
    landed = 0
    for i, t in enumerate(_kill_points(whole, 17)):
        out = tmp_path / f"model{i}"
        landed += kill_after(home, t, "train-cls", str(squares), "--out", str(out), *TRAIN)
        if out.exists():  # a package appears only complete (one rename)
            assert (out / "manifest.json").is_file() and (out / "model.pt").is_file()
        run_medsight(home, "train-cls", str(squares), "--out", str(out), *TRAIN)
        got = _weights(out)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), f"kill at {t:.1f} s"
        assert _hidden(tmp_path) == [], f"a killed run's training or staging folder was left: {_hidden(tmp_path)}"
    assert landed >= 2, "the kills all came after training ended: the test proved nothing"


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    """The Grad-CAM arrays of a heatmap folder: .npy for 2D images, NIfTI for volumes (one-slice NIfTI included)."""
    import nibabel as nib

    return {p.name: np.load(p) if p.suffix == ".npy" else np.asarray(nib.load(str(p)).dataobj)
            for p in sorted(folder.glob("*")) if p.name.endswith((".npy", ".nii.gz"))}


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_predict_cls_killed_then_rerun_equals_uninterrupted(squares: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    model = tmp_path / "model"
    run_medsight(home, "train-cls", str(squares), "--out", str(model), "--epochs", "1", "--batch-size", "16",
         "--backbone", "resnet10", "--input-size", "32,32")
    images = tmp_path / "images"  # 16 of the 48: every run writes one evidence figure per image (~0.3 s each)
    images.mkdir()
    for src in sorted(squares.parent.glob("img*.nii.gz"))[:N_PREDICT]:
        (images / src.name).symlink_to(src)
    ref = tmp_path / "ref" / "pred.csv"
    whole = run_medsight(home, "predict-cls", str(model), str(images), str(ref), "--evidence")
    want = _table(ref)
    # the first run is cold (imports, file cache) and was once so much slower than the rest that every kill
    # point came after the reruns had ended: time a warm run too and take the shorter
    warm = tmp_path / "warm" / "pred.csv"
    whole = min(whole, run_medsight(home, "predict-cls", str(model), str(images), str(warm), "--evidence"))
    ref_heat = ref.with_name("pred_gradcam")
    want_arrays = _arrays(ref_heat)
    assert len(want) == N_PREDICT and len(want_arrays) == N_PREDICT
    landed = 0
    for i, t in enumerate(_kill_points(whole, 23)):
        out = tmp_path / f"pred{i}" / "pred.csv"
        heat = out.with_name("pred_gradcam")
        landed += kill_after(home, t, "predict-cls", str(model), str(images), str(out), "--evidence")
        assert not out.exists() or len(_table(out)) == N_PREDICT, "a partial table"
        if heat.exists():  # the heatmaps arrive as one set, never some of them
            assert set(_arrays(heat)) == set(want_arrays)
        run_medsight(home, "predict-cls", str(model), str(images), str(out), "--evidence")
        got = _table(out)
        assert [{k: v.replace(str(out.parent), "") for k, v in r.items()} for r in got] == \
            [{k: v.replace(str(ref.parent), "") for k, v in r.items()} for r in want]
        arrays = _arrays(heat)
        assert arrays.keys() == want_arrays.keys() and all(np.array_equal(arrays[k], want_arrays[k]) for k in arrays)
        assert {p.name for p in heat.iterdir()} == {p.name for p in ref_heat.iterdir()}
        assert _hidden(out.parent) == [] and _hidden(heat) == [], "temporary files left"
    assert landed >= 2, "the kills all came after prediction ended: the test proved nothing"
