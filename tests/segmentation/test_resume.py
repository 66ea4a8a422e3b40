"""Kill-and-resume ends with exactly the weights of an uninterrupted run with the same seed."""

from __future__ import annotations

import pytest
import torch

import medsight.segmentation.train as loop
from medsight.data.dataset import load_dataset
from medsight.data.fingerprint import compute_fingerprint
from medsight.synthetic.toy import make_toy_dataset
from medsight.plan.planner import make_plan
from medsight.engine.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=4, shape=(20, 16, 12), channels=1)
    ds = load_dataset(root)
    plan = make_plan(compute_fingerprint(ds), memory_gb=0.02, base_filters=4, epochs=3, iterations_per_epoch=2)
    return ds, plan


def _train(ds, plan, model_dir):
    ids = [c.case_id for c in ds.cases]
    return loop.train_fold(ds, plan, "3d", 0, model_dir, ids[:3], ids[3:], seed=7, quiet=True)


def test_resume_after_kill_gives_identical_weights(setup, tmp_path, checkpoint_killer):
    torch.set_num_threads(1)
    ds, plan = setup
    _train(ds, plan, tmp_path / "straight")
    ref = load_checkpoint(tmp_path / "straight/fold_0/model_final.pt")["model"]

    checkpoint_killer.arm(2)  # killed right after the epoch-1 checkpoint reached the disk
    with pytest.raises(checkpoint_killer.Killed):
        _train(ds, plan, tmp_path / "killed")
    assert load_checkpoint(tmp_path / "killed/fold_0/checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "killed/fold_0/model_final.pt").exists()
    checkpoint_killer.disarm()
    summary = _train(ds, plan, tmp_path / "killed")
    assert summary["epochs_done"] == 3
    got = load_checkpoint(tmp_path / "killed/fold_0/model_final.pt")["model"]
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # and a different seed really gives different weights (the comparison can fail)
    other = loop.train_fold(ds, plan, "3d", 0, tmp_path / "other", [c.case_id for c in ds.cases][:3],
                            [c.case_id for c in ds.cases][3:], seed=8, quiet=True)
    assert other["seed"] == 8
    w = load_checkpoint(tmp_path / "other/fold_0/model_final.pt")["model"]
    assert any(not torch.equal(ref[k], w[k]) for k in ref if ref[k].is_floating_point())


def test_checkpoint_from_another_plan_is_refused(setup, tmp_path):
    from dataclasses import replace

    from medsight.errors import ConfigError

    ds, plan = setup
    ids = [c.case_id for c in ds.cases]
    loop.train_fold(ds, plan, "3d", 0, tmp_path, ids[:3], ids[3:], seed=1, epochs=1, quiet=True)
    (tmp_path / "fold_0/model_final.pt").unlink()
    other = replace(plan, memory_gb=plan.memory_gb + 1)
    with pytest.raises(ConfigError, match="different plan"):
        loop.train_fold(ds, other, "3d", 0, tmp_path, ids[:3], ids[3:], seed=1, epochs=1, quiet=True)
