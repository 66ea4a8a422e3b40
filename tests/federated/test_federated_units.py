"""Federated building blocks checked against hand-worked values: the RDP accountant, clipping, FedAvg, FedProx."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsight.errors import ConfigError, DatasetError
from medsight.federated.aggregate import aggregate_hash, fedavg
from medsight.federated.privacy import GaussianAccountant, apply_delta, clip_and_noise, weights_delta
from medsight.federated.site import ProxTask, SiteTask


def zcdp_epsilon(sigma: float, k: int, delta: float) -> float:
    """Closed form: k Gaussian releases are rho-zCDP with rho = k / (2 sigma^2), hence
    (rho + 2 sqrt(rho log(1/delta)), delta)-DP (Bun & Steinke 2016, Prop. 1.3) = the RDP bound at the best
    real order; the accountant's finite order grid can only be at or just above it."""
    rho = k / (2 * sigma**2)
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


def balle_epsilon(sigma: float, k: int, delta: float) -> float:
    """The RDP -> (eps, delta) conversion of Balle et al. 2020 (Thm 21) at the best real order, minimised here by
    SciPy: k Gaussian releases have RDP(a) = k a / (2 sigma^2)."""
    from scipy.optimize import minimize_scalar

    def f(a: float) -> float:
        return k * a / (2 * sigma**2) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)

    return float(minimize_scalar(f, bounds=(1.001, 1e4), method="bounded", options={"xatol": 1e-9}).fun)


def exact_gaussian_epsilon(sigma: float, k: int, delta: float) -> float:
    """The exact eps of k Gaussian releases (= one with multiplier sigma / sqrt(k)) by the analytic Gaussian
    mechanism (Balle & Wang 2018, Thm 8): delta(eps) = Phi(-eps s + 1/(2s)) - e^eps Phi(-eps s - 1/(2s)). Every
    valid accountant's eps is at or above it."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    s = sigma / math.sqrt(k)
    return float(brentq(lambda e: norm.cdf(-e * s + 0.5 / s) - math.exp(e) * norm.cdf(-e * s - 0.5 / s) - delta,
                        1e-9, 100.0))


@pytest.mark.parametrize("sigma,k", [(1.0, 1), (1.0, 2), (0.8, 5), (2.0, 10)])
def test_accountant_matches_closed_form(sigma: float, k: int) -> None:
    """eps (the budget's figure) is Opacus's conversion: at the best real order within 1 %, never below the exact
    eps of the Gaussian mechanism; Mironov 2017's conversion (reported beside it) is the zCDP closed form and looser."""
    acc = GaussianAccountant(1e-5)
    for _ in range(k):
        eps = acc.spend(sigma)
    ref = balle_epsilon(sigma, k, 1e-5)
    assert ref - 1e-9 <= eps <= ref * 1.01
    assert exact_gaussian_epsilon(sigma, k, 1e-5) <= eps < acc.epsilon_mironov()
    mironov = zcdp_epsilon(sigma, k, 1e-5)
    assert mironov <= acc.epsilon_mironov() <= mironov * 1.01
    # sigma=1, one release, delta=1e-5: Mironov 0.5 + 2*sqrt(0.5*11.5129) = 5.2985 by hand; Opacus's 4.73
    if (sigma, k) == (1.0, 1):
        assert acc.epsilon_mironov() == pytest.approx(5.2985, abs=0.01) and eps == pytest.approx(4.7285, abs=0.01)


def test_budget_is_enforced_and_ledger_persists(tmp_path) -> None:
    acc = GaussianAccountant(1e-5)
    assert not acc.would_exceed(1.0, 6.0)  # 4.73 after one release
    acc.spend(1.0)
    assert acc.would_exceed(1.0, 6.0)  # 7.08 after two
    acc.save(tmp_path / "ledger.json")
    again = GaussianAccountant.load(tmp_path / "ledger.json", 1e-5)
    assert again.sigmas == [1.0] and again.epsilon() == acc.epsilon()
    with pytest.raises(ConfigError):
        GaussianAccountant.load(tmp_path / "ledger.json", 1e-6)


def test_clip_and_noise() -> None:
    upd = {"w": torch.full((3, 4), 2.0), "steps": torch.tensor(7)}
    clipped, norm = clip_and_noise(upd, clip=1.0, sigma=0.0)
    assert norm == pytest.approx(math.sqrt(12 * 4))
    assert float(clipped["w"].norm()) == pytest.approx(1.0, rel=1e-6)
    assert int(clipped["steps"]) == 7  # integer buffers are not noised
    noised, _ = clip_and_noise({"w": torch.zeros(20000)}, clip=0.5, sigma=2.0)
    assert float(noised["w"].std()) == pytest.approx(1.0, rel=0.03)  # sigma * clip (4 draws summed and halved)
    assert abs(float(noised["w"].mean())) < 5 / math.sqrt(20000)
    old = {"w": torch.ones(2)}
    assert torch.equal(apply_delta(old, weights_delta({"w": torch.tensor([3.0, 5.0])}, old))["w"],
                       torch.tensor([3.0, 5.0]))


def test_fedavg_weighted_mean_and_hash() -> None:
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(1)}
    b = {"w": torch.tensor([3.0, 1.0]), "n": torch.tensor(2)}
    out = fedavg([a, b], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([2.25, 1.75]))  # (0*1 + 3*3)/4, (4*1 + 1*3)/4
    assert int(out["n"]) == 2
    assert aggregate_hash(out) == aggregate_hash({k: v.clone() for k, v in out.items()})
    assert aggregate_hash(out) != aggregate_hash({"w": out["w"] + 1e-6, "n": out["n"]})


def test_fedprox_adds_the_proximal_term(tmp_path) -> None:
    from medsight.federated.toy import make_sites

    manifest = make_sites(tmp_path, n=20, sites=("A",))["A"]
    task = SiteTask(manifest, "A")
    task.setup()
    model = task.build_model()
    anchor = {k: v + 0.1 for k, v in model.state_dict().items()}
    batch = next(iter(task.epoch_batches(0, np.random.default_rng(0))))
    n_params = sum(p.numel() for p in model.parameters())
    prox = ProxTask(task, anchor, mu=2.0)
    # (mu / 2) * sum (0.1)^2 over every parameter = n_params * 0.01
    assert float((prox.loss(model, batch) - task.loss(model, batch)).detach()) == pytest.approx(n_params * 0.01, rel=1e-4)


def test_site_task_learns_the_named_label_with_a_medsight_backbone(tmp_path) -> None:
    """A manifest with two 0/1 columns (the classification demo's): ``label`` picks one, and a named backbone
    (here the demo classifier's evidence-map ResNet) gives one logit per image."""
    from medsight.federated.toy import make_sites

    manifest = make_sites(tmp_path, n=20, sites=("A",))["A"]
    lines = manifest.read_text().splitlines()
    # a second label column, the complement of the first: learning the wrong one would flip every target
    lines = [lines[0] + ",other"] + [f"{row},{1 - int(row.rsplit(',', 1)[1])}" for row in lines[1:]]
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="--label"):
        SiteTask(manifest, "A").setup()  # two label columns and none named: refused, not guessed
    task = SiteTask(manifest, "A", label="other", backbone="resnet10-slim-evidence", size=32)
    task.setup()
    x, y = task._data[0], task._data[1]
    expected = [1.0 - float(r.split(",")[4]) for r in lines[1:] if r.split(",")[3] == "train"]
    assert y[:, 0].tolist() == expected
    model = task.build_model()
    assert model(x[:3]).shape == (3, 1)
    assert math.isfinite(float(task.loss(model, (x[:4], y[:4])).detach()))


def test_federated_package_card_lists_the_contributing_sites(tmp_path) -> None:
    from medsight.federated.package import package_federation
    from medsight.federated.site import small_classifier
    from medsight.report.cards import training_data

    out = tmp_path / "run"
    out.mkdir()
    torch.save(small_classifier().state_dict(), out / "model.pt")
    rnd = {"round": 1, "train": {"A": {}, "B": {}, "C": {}}, "evaluate": {"A": {"auc": 0.8, "n": 5}},
           "contributors": ["A", "B"], "no_reply": ["C"], "aggregate_sha256": "ab" * 32, "global": {"auc": 0.8}}
    (out / "federation.json").write_text(__import__("json").dumps({
        "strategy": "fedavg", "rounds": [rnd], "config": {"dp-noise": 0.0, "dp-clip": 1.0, "dp-delta": 1e-5,
                                                          "dp-epsilon": 10.0, "backbone": "small"}}))
    pkg = package_federation(out, tmp_path / "pkg", "fed", register=False)
    data = training_data(pkg.path)
    assert data["training sites"] == ["A", "B"]  # C was asked but never sent an update
    assert data["training"].startswith("federated (fedavg, 1 rounds)")
    assert pkg.extra["federated"]["model"] == {"backbone": "small", "image-size": 32, "label": ""}


def test_noised_update_keeps_batchnorm_variances_positive() -> None:
    """DP noise of sd 1 on a BatchNorm model's update: without the floor about half the running variances go
    negative and every output is NaN (what the demo-site benchmark hit); with it outputs stay finite."""
    from medsight.federated.site import site_model

    torch.manual_seed(0)
    model = site_model("resnet10-slim-evidence", 32)
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    noised, _ = clip_and_noise(weights_delta(glob, glob), clip=1.0, sigma=1.0,
                               generator=torch.Generator().manual_seed(3))
    raw = {k: glob[k] + noised[k] if glob[k].is_floating_point() else noised[k] for k in glob}
    assert any((v < 0).any() for k, v in raw.items() if k.endswith("running_var"))
    new = apply_delta(glob, noised)
    assert all(float(v.min()) >= 0.99e-5 for k, v in new.items() if k.endswith("running_var"))  # float32
    model.load_state_dict(new)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 1, 32, 32))).all()


def test_cli_names_a_wrong_backbone_before_starting_any_process(tmp_path, capsys) -> None:
    from medsight.cli.main import main
    from medsight.federated.toy import make_sites

    sites = make_sites(tmp_path / "data", n=10, sites=("A", "B"))
    with pytest.raises(SystemExit) as exit_:
        main(["federated", "run", "--site", f"A={sites['A']}", "--site", f"B={sites['B']}", "--backbone",
              "resnet11", "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "resnet11" in err and "resnet10-slim-evidence" in err  # the known names are listed
    assert not (tmp_path / "out").exists()


def test_a_previous_runs_record_is_not_taken_for_this_runs_result(tmp_path) -> None:
    """The benchmark once reported a 10-round run from a 1-round run's federation.json left in the folder."""
    import json
    import os
    import subprocess
    import sys
    import time

    from medsight.federated.launch import FederationError, wait_result

    (tmp_path / "federation.json").write_text(json.dumps({"rounds": [{"round": 1}]}))
    old = time.time() - 60
    os.utime(tmp_path / "federation.json", (old, old))
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    with pytest.raises(FederationError, match="without a result"):
        wait_result(tmp_path, done, timeout=30, since=time.time())
    assert wait_result(tmp_path, done, timeout=30)["rounds"] == [{"round": 1}]  # no 'since': any record


def test_a_relative_audit_file_is_made_absolute_for_the_supernode(tmp_path, monkeypatch) -> None:
    """The SuperNode runs in another folder: `--audit audit.db` must still mean the user's ./audit.db."""
    from medsight.federated.launch import site_node_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.csv").write_text("image,site\n")
    nc = site_node_config("A", tmp_path / "m.csv", audit="audit.db")
    assert f'audit="{tmp_path / "audit.db"}"' in nc
    assert 'audit="postgresql://h/db"' in site_node_config("A", tmp_path / "m.csv", audit="postgresql://h/db")
