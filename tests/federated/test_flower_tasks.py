"""Segmentation and slide-level MIL over a real Flower federation (SuperLink + one SuperNode per site, 127.0.0.1).

Segmentation: the plan travels in the run config, each site trains its own toy cases; the Dice and ECE a site
reported for the final round are recomputed here from the final weights, and the packaged model segments an
image through ``Predictor``. MIL: features live in a folder named by the node config, outside the label CSV's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsight.data.dataset import load_dataset
from medsight.data.fingerprint import compute_fingerprint
from medsight.federated.aggregate import aggregate_hash
from medsight.federated.launch import RUN_DEFAULTS
from medsight.federated.package import package_federation
from medsight.federated.tasks import site_task
from medsight.io.nifti import read_nifti
from medsight.package.package import load_package
from medsight.plan.planner import make_plan
from medsight.segmentation.predict import Predictor
from medsight.synthetic.toy import make_toy_dataset
from tests.federated.test_federated_tasks import _write_mil_site
from tests.federated.test_flower_run import require_flower


@pytest.mark.slow
def test_segmentation_federation_evidence_and_package(tmp_path) -> None:
    require_flower()
    from medsight.federated.launch import run_federation

    root = make_toy_dataset(tmp_path / "toy", n_cases=12, shape=(20, 16, 12), channels=2)
    plan = make_plan(compute_fingerprint(load_dataset(root)), memory_gb=0.02, base_filters=8, epochs=3,
                     iterations_per_epoch=4)
    config = {"task": "segmentation", "plan": plan.to_json(), "configuration": "3d", "rounds": 1,
              "local-steps": 20, "min-sites": 2, "round-timeout": 120.0}
    out = tmp_path / "out"
    result = run_federation({"site_A": root, "site_B": root / "manifest.csv"}, out, config, timeout=600)
    (r2,) = result["rounds"]
    assert r2["contributors"] == ["site_A", "site_B"]
    for m in r2["evaluate"].values():
        assert set(m) == {"dice", "dice_ball", "dice_slab", "ece", "n"} and m["n"] == 2
    assert r2["global"]["dice"] > 0.5
    final = torch.load(out / "model.pt")
    assert aggregate_hash(final) == r2["aggregate_sha256"]
    # the site's evidence is what its task computes from the final weights (one thread, the same cases)
    rc = {**RUN_DEFAULTS, **config}
    task = site_task(rc, {"site": "site_A", "manifest": str(root)})
    net = task.build_model()
    net.load_state_dict(final)
    again = task.validate(net)
    assert again["dice"] == pytest.approx(r2["evaluate"]["site_A"]["dice"], abs=1e-6)
    assert again["ece"] == pytest.approx(r2["evaluate"]["site_A"]["ece"], abs=1e-6)

    pkg = package_federation(out, tmp_path / "pkg", "fed-seg", register=False)
    rec = load_package(pkg.path).manifest
    assert rec["task"] == "segmentation" and rec["extra"]["federated"]["task"] == "segmentation"
    case = load_dataset(root).cases[0]
    pred = Predictor(pkg.path).predict([read_nifti(p) for p in case.images])
    ref = read_nifti(case.label).array
    assert pred.labels.array.shape == ref.shape
    ball = (pred.labels.array == 1), (ref == 1)
    assert 2 * (ball[0] & ball[1]).sum() / (ball[0].sum() + ball[1].sum()) > 0.5


@pytest.mark.slow
def test_mil_federation_reads_the_node_features_folder(tmp_path) -> None:
    require_flower()
    from medsight.federated.launch import run_federation

    rng = np.random.default_rng(0)
    _write_mil_site(tmp_path / "data", "A", 0.0, 28, rng)
    _write_mil_site(tmp_path / "data", "B", 2.0, 28, rng)
    moved = tmp_path / "elsewhere"
    (tmp_path / "data" / "features").rename(moved)  # only the node config's `features` can find them now
    labels = tmp_path / "data" / "labels.csv"
    result = run_federation({"A": labels, "B": labels}, tmp_path / "out",
                            {"task": "mil", "feature-dim": 16, "rounds": 1, "local-steps": 20, "min-sites": 2},
                            timeout=600, features={"A": moved, "B": moved})
    last = result["rounds"][-1]
    assert last["contributors"] == ["A", "B"]
    for m in last["evaluate"].values():
        assert m["n"] == 8 and 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["ece"] <= 1.0
    glob = torch.load(tmp_path / "out" / "model.pt")
    assert abs(float(glob["proj.mu"].mean()) - 1.0) < 0.1  # the sites' first-round statistics, averaged
    assert json.loads((tmp_path / "out" / "federation.json").read_text())["config"]["task"] == "mil"
