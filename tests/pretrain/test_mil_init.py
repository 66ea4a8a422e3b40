"""``train-mil --init ENCODER_PACKAGE``: MIL learns on stored tile features, so the package selects the features.

The features are made by the registry's ``pretrained`` encoder from a real (tiny) encoder package; the MIL package
then records that package's id (config, manifest, card). Attacks: features made by another encoder, a package
whose width does not fit the features, a tampered package.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medsight.cli.main import main
from medsight.data.dataset import load_dataset
from medsight.data.fingerprint import compute_fingerprint
from medsight.nets.encoders import load_encoder
from medsight.package.encoder import WEIGHTS
from medsight.package.package import load_package
from medsight.pathology.features import SlideFeatures
from medsight.plan.planner import make_plan
from medsight.pretrain.run import pretrain
from medsight.synthetic.toy import make_toy_dataset

N_SLIDES = 8


@pytest.fixture(scope="module")
def encoder_pkg(tmp_path_factory):
    root = make_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(20, 16, 12), channels=1)
    plan = make_plan(compute_fingerprint(load_dataset(root)), memory_gb=0.02, base_filters=4, epochs=1,
                     iterations_per_epoch=1)
    out = tmp_path_factory.mktemp("enc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSIGHT_HOME", str(out / "home"))
        return pretrain(root, out / "enc", plan, "3d", "restore", epochs=1, iterations=1, quiet=True)[0]


def _features(folder, provenance, rows_of):  # noqa: ANN001, ANN202
    """N_SLIDES slides of stored features (every second one labelled 1) and their label CSV."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "slides.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide_id", "label"])
        for i in range(N_SLIDES):
            sid, label = f"s{i}", i % 2
            feats = rows_of(rng, label)
            SlideFeatures(feats, np.zeros((len(feats), 4), np.int64), "t" * 64, "s" * 64, provenance, 1.0,
                          224).save(folder / sid / "features.npz")
            w.writerow([sid, label])
    return folder / "slides.csv"


def _encoded(enc, pkg):  # noqa: ANN001, ANN202
    """Rows from the package's own encoder on patches of its plan's size: positive slides' patches are brighter."""
    patch = pkg.read_json("encoder.json")["config"]["patch_size"]

    def rows(rng: np.random.Generator, label: int) -> np.ndarray:
        x = torch.from_numpy(rng.normal(label, 1.0, (6, 1, *patch)).astype(np.float32))
        return enc(x).numpy()
    return rows


def _train(capsys, csv_path, feats, out, init):  # noqa: ANN001, ANN202
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["-q", "train-mil", str(csv_path), str(feats), "--out", str(out), "--epochs", "2", "--init", str(init)])
    err = capsys.readouterr().err
    return e.value.code, err


def test_train_mil_init_records_the_package_that_made_the_features(encoder_pkg, tmp_path, capsys):
    enc = load_encoder("pretrained", weights=encoder_pkg.path)
    assert enc.provenance["weights_sha256"] == encoder_pkg.manifest["files"][WEIGHTS]["sha256"]
    feats = tmp_path / "feats"
    labels = _features(feats, enc.provenance, _encoded(enc, encoder_pkg))
    main(["-q", "train-mil", str(labels), str(feats), "--out", str(tmp_path / "mil"), "--epochs", "2",
          "--init", str(encoder_pkg.path)])
    pkg = load_package(tmp_path / "mil")
    assert pkg.task == "mil" and pkg.extra["init"][0]["package_id"] == encoder_pkg.id
    config = json.loads(pkg.file("config.json").read_text())
    assert config["init"]["package_id"] == encoder_pkg.id and config["in_dim"] == 16  # filters [4, 8, 16]
    from medsight.report.cards import training_data

    assert encoder_pkg.id[:12] in training_data(pkg.path)["initialised from"]


def test_features_of_another_encoder_are_refused(encoder_pkg, tmp_path, capsys):
    other = {"encoder": "efficientnet-lite0", "weights_sha256": "a" * 64}
    labels = _features(tmp_path / "f", other, lambda rng, y: rng.normal(y, 1, (5, 16)).astype(np.float32))
    code, err = _train(capsys, labels, tmp_path / "f", tmp_path / "mil", encoder_pkg.path)
    assert code == 2 and err.count("\n") == 1
    assert "extracted with efficientnet-lite0, not with encoder package" in err
    assert not (tmp_path / "mil").exists()


def test_features_that_do_not_fit_the_package_are_refused(encoder_pkg, tmp_path, capsys):
    enc = load_encoder("pretrained", weights=encoder_pkg.path)  # the package's id, but 32 columns, not 16
    labels = _features(tmp_path / "f", enc.provenance, lambda rng, y: rng.normal(y, 1, (5, 32)).astype(np.float32))
    code, err = _train(capsys, labels, tmp_path / "f", tmp_path / "mil", encoder_pkg.path)
    assert code == 2 and "it gives 16 features per tile, the features have 32" in err


def test_a_tampered_package_is_refused(encoder_pkg, tmp_path, capsys):
    import shutil

    copy = tmp_path / "enc"
    shutil.copytree(encoder_pkg.path, copy)
    enc = load_encoder("pretrained", weights=copy)
    labels = _features(tmp_path / "f", enc.provenance, _encoded(enc, encoder_pkg))
    (copy / WEIGHTS).write_bytes((copy / WEIGHTS).read_bytes() + b"\0")
    code, err = _train(capsys, labels, tmp_path / "f", tmp_path / "mil", copy)
    assert code == 2 and err.count("\n") == 1 and "encoder.pt was changed" in err
