"""``kill -9`` a real ``medsight pretrain`` after its first checkpoint, run it again: the encoder package holds
exactly the tensors of an uninterrupted run, and no package appears before the run has finished."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from medsight.data.dataset import load_dataset
from medsight.data.fingerprint import compute_fingerprint
from medsight.plan.planner import make_plan
from medsight.synthetic.toy import make_toy_dataset
from .processes import kill_within, run_medsight, start


@pytest.mark.slow
def test_pretrain_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path) -> None:
    root = make_toy_dataset(tmp_path / "toy", n_cases=4, shape=(20, 16, 12), channels=1)
    plan = make_plan(compute_fingerprint(load_dataset(root)), memory_gb=0.02, base_filters=4)
    plan.save(tmp_path / "plan.json")
    args = ["--plan", str(tmp_path / "plan.json"), "--epochs", "6", "--iterations", "4", "--seed", "3"]
    run_medsight(tmp_path / "home", "pretrain", str(root), "-o", str(tmp_path / "ref"), *args)

    out = tmp_path / "killed"
    p = start(tmp_path / "home", "pretrain", str(root), "-o", str(out), *args)
    ckpt = out.with_name("killed.training") / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    landed = kill_within(p, 0.0)
    assert landed, "the run ended before the kill; give it more epochs"
    assert not out.exists()  # the package is written once, at the end
    run_medsight(tmp_path / "home", "pretrain", str(root), "-o", str(out), *args)
    a = torch.load(tmp_path / "ref" / "encoder.pt", weights_only=True)
    b = torch.load(out / "encoder.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
