"""Segmentation and slide-level MIL as federated site tasks (in process, no Flower): each site reads only its
own cases, the server's network is the sites' network, FedAvg rounds of the engine's local steps learn, and the
sites' evidence (Dice, ECE, AUC) agrees with independent computations (scikit-learn's F1 is the Dice of a mask)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from medsight.data.dataset import load_dataset
from medsight.data.fingerprint import compute_fingerprint
from medsight.data.preprocess import preprocess_case
from medsight.engine.loop import local_update
from medsight.engine.seeding import seed_everything
from medsight.errors import ConfigError, DatasetError
from medsight.federated.aggregate import fedavg
from medsight.federated.launch import RUN_DEFAULTS, check_task
from medsight.federated.mil_site import MilSiteTask
from medsight.federated.seg_site import SegSiteTask
from medsight.federated.tasks import global_model, site_task
from medsight.pathology.features import FEATURES, SlideFeatures
from medsight.plan.planner import make_plan
from medsight.segmentation.predict import plan_grid_probabilities
from medsight.synthetic.toy import make_toy_dataset


def _rounds(tasks: list, glob: dict[str, torch.Tensor], rounds: int, steps: int) -> dict[str, torch.Tensor]:
    """What the ClientApp and ServerApp do, without the processes: adapt, local steps, FedAvg."""
    for rnd in range(1, rounds + 1):
        outs = []
        for i, t in enumerate(tasks):
            start = t.adapt_global(glob) if hasattr(t, "adapt_global") else glob
            outs.append(local_update(t, start, steps, seed=i, round=rnd)[:2])
        glob = fedavg([w for w, _ in outs], [n for _, n in outs])
    return glob


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory):
    root = make_toy_dataset(tmp_path_factory.mktemp("fedseg"), n_cases=12, shape=(20, 16, 12), channels=2)
    plan = make_plan(compute_fingerprint(load_dataset(root)), memory_gb=0.02, base_filters=8, epochs=3,
                     iterations_per_epoch=4)
    return root, plan


def test_segmentation_sites_read_only_their_cases_and_learn(seg) -> None:
    torch.set_num_threads(1)
    root, plan = seg
    rc = {**RUN_DEFAULTS, "task": "segmentation", "plan": json.dumps(plan.to_dict()), "configuration": "3d"}
    tasks = [site_task(rc, {"site": s, "manifest": str(root / "manifest.csv")}) for s in ("site_A", "site_B")]
    assert all(isinstance(t, SegSiteTask) for t in tasks)
    for t, site in zip(tasks, ("site_A", "site_B")):
        t.setup()
        assert {c.site for c in t.ds.cases} == {site} and len(t.ds.cases) == 6 and len(t.held) == 2
    seed_everything(0)
    server = global_model(rc)
    glob = {k: v.detach().clone() for k, v in server.state_dict().items()}
    assert {k: v.shape for k, v in glob.items()} == {k: v.shape for k, v in tasks[0].build_model().state_dict().items()}
    before = [t.validate(_net(t, glob)) for t in tasks]
    glob = _rounds(tasks, glob, rounds=3, steps=10)
    after = [t.validate(_net(t, glob)) for t in tasks]
    for b, a in zip(before, after):
        assert a["dice_ball"] > max(0.5, b["dice_ball"] + 0.2), (b, a)
        assert 0.0 <= a["ece"] <= 1.0 and a["n"] == 2
    # the site's Dice is the F1 of the predicted mask against the reference (scikit-learn), case by case
    t = tasks[0]
    net = _net(t, glob)
    ref = []
    for cid in t.held:
        pre = preprocess_case(t.ds.case(cid), plan, plan.config("3d"))
        pred = plan_grid_probabilities([net], pre.image, plan.config("3d"), [])[0].numpy().argmax(0)
        ref.append(f1_score((pre.label == 1).ravel(), (pred == 1).ravel()))
    assert t.validate(net)["dice_ball"] == pytest.approx(float(np.mean(ref)), abs=1e-9)


def _net(task, weights):
    net = task.build_model()
    net.load_state_dict(weights)
    return net.eval()


def test_segmentation_run_config_errors(seg) -> None:
    root, plan = seg
    with pytest.raises(ConfigError, match="needs the plan"):
        check_task({"task": "segmentation"})
    with pytest.raises(ConfigError, match="no '2d_huge' configuration"):
        check_task({"task": "segmentation", "plan": json.dumps(plan.to_dict()), "configuration": "2d_huge"})
    with pytest.raises(ConfigError, match="task must be one of"):
        check_task({"task": "detection"})
    with pytest.raises(ConfigError, match="feature-dim"):
        check_task({"task": "mil"})
    rc = {**RUN_DEFAULTS, "task": "segmentation", "plan": json.dumps(plan.to_dict())}
    with pytest.raises(DatasetError, match="no case of site 'site_Z'"):
        site_task(rc, {"site": "site_Z", "manifest": str(root)}).setup()


def _write_mil_site(root, site: str, shift: float, n: int, rng: np.random.Generator) -> None:
    """Bags of 16-dim Gaussian tiles offset by a per-site scanner shift; positives hold 3 shifted tiles."""
    rows = []
    for i in range(n):
        label, sid = i % 2, f"{site}-s{i:02d}"
        x = rng.normal(shift, 1.0, size=(int(rng.integers(20, 40)), 16)).astype(np.float32)
        if label:
            x[:3, 0] += 5.0
        boxes = np.stack([np.arange(len(x)) * 100, np.zeros(len(x)), np.full(len(x), 100), np.full(len(x), 100)], 1)
        (root / "features" / sid).mkdir(parents=True)
        SlideFeatures(x, boxes, "h", "s", {"name": "test", "weights_sha256": "x"}, 0.5, 224).save(
            root / "features" / sid / FEATURES)
        rows.append({"slide_id": sid, "patient_id": f"{site}-p{i:02d}", "label": label, "site": site,
                     "split": "test" if i >= n - 8 else "train"})
    with open(root / "labels.csv", "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if f.tell() == 0:
            w.writeheader()
        w.writerows(rows)


def test_mil_sites_standardise_together_and_learn(tmp_path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    _write_mil_site(tmp_path, "A", 0.0, 28, rng)
    _write_mil_site(tmp_path, "B", 2.0, 28, rng)
    rc = {**RUN_DEFAULTS, "task": "mil", "feature-dim": 16}  # Adam at 3e-3
    tasks = [site_task(rc, {"site": s, "manifest": str(tmp_path / "labels.csv")}) for s in ("A", "B")]
    assert all(isinstance(t, MilSiteTask) for t in tasks)
    for t, s in zip(tasks, ("A", "B")):
        t.setup()
        assert {b.slide_id[0] for b in t.inner.train + t.inner.val} == {s}
        assert len(t.inner.train) == 20 and len(t.inner.val) == 8
    seed_everything(0)
    glob = {k: v.detach().clone() for k, v in global_model(rc).state_dict().items()}
    assert not glob["proj.mu"].any() and torch.all(glob["proj.sigma"] == 1)
    glob1 = _rounds(tasks, glob, rounds=1, steps=20)
    # after round 1 the standardiser is the example-weighted mean of the sites' own training statistics
    means = [torch.cat([b.features for b in t.inner.train]).mean(0) for t in tasks]
    assert torch.allclose(glob1["proj.mu"], (means[0] + means[1]) / 2, atol=1e-5)
    assert abs(float(glob1["proj.mu"].mean()) - 1.0) < 0.1  # halfway between the sites' shifts (0 and 2)
    glob = _rounds(tasks, glob1, rounds=4, steps=20)
    for t in tasks:
        m = t.validate(_net(t, glob))
        with torch.no_grad():
            z = np.array([float(_net(t, glob)(b.features)["logit"]) for b in t.inner.val])
        y = [b.label for b in t.inner.val]
        assert m["auc"] == pytest.approx(roc_auc_score(y, z)) and m["auc"] >= 0.9, m
        assert m["n"] == 8 and 0.0 <= m["ece"] <= 1.0
    # a later round leaves the averaged standardiser alone
    assert torch.equal(tasks[0].adapt_global(glob1)["proj.mu"], glob1["proj.mu"])
