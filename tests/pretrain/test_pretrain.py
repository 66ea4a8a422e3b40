"""Pretraining writes a verified encoder package; ``--init`` starts from exactly its weights, refuses a network it
does not fit and a tampered package, and records the package id; a killed pretraining resumes to the same weights.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from medsight.cli.main import main
from medsight.data.dataset import load_dataset
from medsight.data.fingerprint import compute_fingerprint
from medsight.engine.seeding import seed_everything
from medsight.errors import ConfigError
from medsight.nets.encoders import load_encoder
from medsight.package.encoder import WEIGHTS, load_encoder_package
from medsight.package.manifest import PackageError
from medsight.package.package import load_package
from medsight.plan.planner import make_plan
from medsight.pretrain.run import head_keys, pretrain
from medsight.segmentation.train import SegTask, train_fold
from medsight.synthetic.toy import make_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = make_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=4, shape=(20, 16, 12), channels=1)
    ds = load_dataset(root)
    plan = make_plan(compute_fingerprint(ds), memory_gb=0.02, base_filters=4, epochs=2, iterations_per_epoch=2)
    return root, ds, plan


@pytest.fixture(scope="module")
def encoders(toy, tmp_path_factory):
    """One restore and one contrastive encoder package (2 epochs x 2 steps each)."""
    root, _, plan = toy
    out = tmp_path_factory.mktemp("enc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSIGHT_HOME", str(out / "home"))
        pkgs = {m: pretrain(root, out / m, plan, "3d", m, epochs=2, iterations=2, quiet=True)[0]
                for m in ("restore", "contrastive")}
    return pkgs


def test_the_package_is_a_verified_encoder(encoders, toy):
    pkg = load_package(encoders["restore"].path)
    assert pkg.task == "encoder" and pkg.id == encoders["restore"].id
    assert {"encoder.pt", "encoder.json", "plan.json", "log.jsonl"} <= set(pkg.files)
    desc = pkg.read_json("encoder.json")
    assert desc["method"] == "restore" and desc["network"] == "dynunet" and desc["data"]["volumes"] == 4
    assert desc["training"]["epochs_done"] == 2
    assert desc["plan"]["sha256"] == toy[2].sha256()
    _, state, _ = load_encoder_package(pkg.path)
    heads = head_keys(toy[2].config("3d"), 1)
    assert heads and not heads & set(state)  # class-count heads are never carried
    assert "output_block.conv.conv.weight" in heads


def test_contrastive_package_holds_the_encoder_path_only(encoders):
    _, state, desc = load_encoder_package(encoders["contrastive"].path)
    assert desc["parts"] == "encoder"
    assert sorted({k.split(".")[0] for k in state}) == ["bottleneck", "downsamples", "input_block"]


@pytest.mark.parametrize("method", ["restore", "contrastive"])
def test_init_starts_from_the_encoders_weights(encoders, toy, method):
    _, ds, plan = toy
    cfg = plan.config("3d")
    loaded = load_encoder_package(encoders[method].path)
    seed_everything(5)
    scratch = SegTask(ds, plan, cfg, [], [], 5, True).build_model().state_dict()
    seed_everything(5)
    init = SegTask(ds, plan, cfg, [], [], 5, True, loaded).build_model().state_dict()
    state = loaded[1]
    for k, v in state.items():
        assert torch.equal(init[k], v), k
        assert not torch.equal(scratch[k], v), k
    untouched = [k for k in init if k not in state and not k.startswith("skip_layers.")]
    assert untouched  # the heads (and, for contrastive, the decoder) keep their seeded initialisation
    for k in untouched:
        assert torch.equal(init[k], scratch[k]), k


def test_train_init_records_the_package(encoders, toy, tmp_path):
    _, ds, plan = toy
    ids = [c.case_id for c in ds.cases]
    pkg = encoders["restore"]
    s = train_fold(ds, plan, "3d", 0, tmp_path / "m", ids[:3], ids[3:], seed=1, epochs=1, quiet=True, init=pkg.path)
    assert s["init"]["package_id"] == pkg.id and s["init"]["method"] == "restore"
    ck = torch.load(tmp_path / "m/fold_0/checkpoint.pt", weights_only=False)
    assert ck["identity"]["init_package_id"] == pkg.id


def test_a_network_the_encoder_does_not_fit_is_refused(encoders, toy, tmp_path):
    _, ds, plan = toy
    wider = replace(plan, configurations={"3d": replace(plan.config("3d"), filters=[8, 16, 32])})
    ids = [c.case_id for c in ds.cases]
    with pytest.raises(ConfigError, match=r"does not fit this network: input_block.conv1.conv.weight is "
                                          r"\(4, 1, 3, 3, 3\) in the package, \(8, 1, 3, 3, 3\) here"):
        train_fold(ds, wider, "3d", 0, tmp_path / "m", ids[:3], ids[3:], epochs=1, quiet=True,
                   init=encoders["restore"].path)
    assert not (tmp_path / "m/fold_0/checkpoint.pt").exists()


def test_a_tampered_encoder_package_is_refused(encoders, tmp_path):
    import shutil

    copy = tmp_path / "enc"
    shutil.copytree(encoders["contrastive"].path, copy)
    state = torch.load(copy / WEIGHTS, weights_only=True)
    next(iter(state.values())).add_(0.01)  # a poisoned weight
    torch.save(state, copy / WEIGHTS)
    with pytest.raises(PackageError, match="encoder.pt was changed"):
        load_encoder_package(copy)


def test_a_model_package_of_another_kind_is_not_an_encoder(toy, tmp_path):
    from medsight.segmentation.package import package_segmentation

    _, ds, plan = toy
    ids = [c.case_id for c in ds.cases]
    train_fold(ds, plan, "3d", 0, tmp_path / "t", ids[:3], ids[3:], epochs=1, quiet=True)
    seg = package_segmentation(tmp_path / "t", tmp_path / "seg", name="seg")
    with pytest.raises(PackageError, match="is a segmentation model, not an encoder package"):
        load_encoder_package(seg.path)


def test_the_encoders_registry_serves_the_package(encoders, toy):
    enc = load_encoder("pretrained", weights=encoders["restore"].path)
    assert enc.provenance["package_id"] == encoders["restore"].id
    feats = enc(torch.zeros(2, 1, *toy[2].config("3d").patch_size))
    assert feats.shape == (2, 16)  # the bottleneck's width: filters [4, 8, 16]


def test_pretrain_resumes_after_a_kill_to_the_same_weights(toy, tmp_path, checkpoint_killer):
    root, _, plan = toy
    ref = pretrain(root, tmp_path / "straight", plan, "3d", "restore", epochs=3, iterations=2, quiet=True)[0]
    checkpoint_killer.arm(2)  # killed right after the epoch-1 checkpoint reached the disk
    with pytest.raises(checkpoint_killer.Killed):
        pretrain(root, tmp_path / "killed", plan, "3d", "restore", epochs=3, iterations=2, quiet=True)
    assert not (tmp_path / "killed").exists()  # no half-written package
    checkpoint_killer.disarm()
    got = pretrain(root, tmp_path / "killed", plan, "3d", "restore", epochs=3, iterations=2, quiet=True)[0]
    a = torch.load(ref.file(WEIGHTS), weights_only=True)
    b = torch.load(got.file(WEIGHTS), weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    desc = got.read_json("encoder.json")  # the history comes from the checkpoint: all three epochs
    assert desc["training"]["epochs_done"] == 3 and desc["data"]["pool_sha256"] == ref.extra["data_fingerprint"]


def test_cli_pretrain_then_train_init_and_one_line_errors(toy, tmp_path, capsys):
    root = make_toy_dataset(tmp_path / "toy10", n_cases=10, shape=(20, 16, 12), channels=1)  # 5 folds: 5 patients
    toy[2].save(root / "medsight_plan.json")
    enc = tmp_path / "enc"
    main(["-q", "pretrain", str(root), "-o", str(enc), "--plan", str(root / "medsight_plan.json"),
          "--epochs", "1", "--iterations", "1"])
    assert load_package(enc).task == "encoder"
    model = tmp_path / "model"
    main(["-q", "train", str(root), "--model-dir", str(model), "--epochs", "1", "--init", str(enc)])
    pkg = load_package(model)
    assert pkg.extra["init"][0]["package_id"] == load_package(enc).id
    from medsight.report.cards import training_data

    assert load_package(enc).id[:12] in training_data(model)["initialised from"]
    (enc / WEIGHTS).write_bytes((enc / WEIGHTS).read_bytes() + b"\0")
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        main(["-q", "train", str(root), "--model-dir", str(tmp_path / "m2"), "--epochs", "1", "--init", str(enc)])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and err.count("\n") == 1 and "encoder.pt was changed" in err


@pytest.mark.slow
def test_pretrain_runs_data_parallel(toy, tmp_path):
    """--nproc 2: two DDP processes (gloo) each take half of every batch; rank 0 writes one verified package."""
    import os
    import subprocess
    import sys

    root, _, plan = toy
    plan.save(tmp_path / "plan.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDSIGHT_HOME": str(tmp_path / "home")}
    p = subprocess.run([sys.executable, "-m", "medsight.cli.main", "-q", "pretrain", str(root), "-o",
                        str(tmp_path / "enc"), "--plan", str(tmp_path / "plan.json"), "--method", "contrastive",
                        "--epochs", "2", "--iterations", "2", "--nproc", "2"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    pkg = load_package(tmp_path / "enc")
    t = pkg.read_json("encoder.json")["training"]
    assert t["processes"] == 2 and t["epochs_done"] == 2 and t["batch_size"] == 4
