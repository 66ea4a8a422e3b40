"""Sample-level DP-SGD at a site: the accountant against hand-worked RDP, the Opacus step against a per-example
loop written here (clip each example's gradient, sum, divide by the expected batch), BatchNorm refused."""

from __future__ import annotations

import math

import pytest
import torch

from medsight.errors import ConfigError
from medsight.federated.dpsgd import dpsgd_update
from medsight.federated.launch import check_task
from medsight.federated.privacy import ORDERS, GaussianAccountant
from medsight.federated.site import SiteTask
from medsight.federated.toy import make_sites
from tests.federated.test_federated_units import balle_epsilon, zcdp_epsilon


@pytest.mark.parametrize("q,sigma", [(0.05, 1.0), (0.3, 0.8), (0.01, 2.0)])
def test_sampled_gaussian_rdp_matches_the_binomial_expansion(q: float, sigma: float) -> None:
    """Integer order 2 of the subsampled Gaussian (Mironov, Talwar & Zhang 2019, Sec. 3.3):
    RDP(2) = log((1-q)^2 + 2q(1-q) + q^2 exp(1/sigma^2)), per step, steps add."""
    acc = GaussianAccountant(1e-5, sampled=[(sigma, q, 7)])
    rdp2 = acc.rdp()[ORDERS.index(2.0)]
    assert rdp2 == pytest.approx(7 * math.log((1 - q) ** 2 + 2 * q * (1 - q) + q * q * math.exp(1 / sigma**2)),
                                 rel=1e-9)


def test_unsampled_dpsgd_is_the_gaussian_mechanism_and_the_ledger_keeps_both(tmp_path) -> None:
    acc = GaussianAccountant(1e-5)
    eps = acc.spend_sampled(1.0, 1.0, 3)  # q = 1: three plain Gaussian releases
    ref = balle_epsilon(1.0, 3, 1e-5)
    assert ref - 1e-9 <= eps <= 1.01 * ref
    assert zcdp_epsilon(1.0, 3, 1e-5) <= acc.epsilon_mironov() <= 1.01 * zcdp_epsilon(1.0, 3, 1e-5)
    acc.spend(2.0)  # a client-level release composes with it
    assert acc.epsilon() == pytest.approx(GaussianAccountant(1e-5, [1.0, 1.0, 1.0, 2.0]).epsilon())
    acc.save(tmp_path / "ledger.json")
    again = GaussianAccountant.load(tmp_path / "ledger.json", 1e-5)
    assert again.sampled == [(1.0, 1.0, 3)] and again.epsilon() == pytest.approx(acc.epsilon())
    # subsampling amplifies privacy: the same noise at q = 0.1 costs far less
    assert GaussianAccountant(1e-5, sampled=[(1.0, 0.1, 3)]).epsilon() < eps / 3
    assert not acc.would_exceed_sampled((1.0, 0.01, 1), acc.epsilon() + 0.5)


class _SGDSite(SiteTask):
    """Plain SGD: Adam's first steps are about lr * sign(gradient), so float-level differences in gradients near
    zero would flip whole steps and hide what is compared (the privatised gradient)."""

    def configure_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.5)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> SiteTask:
    sites = make_sites(tmp_path_factory.mktemp("dpsgd"), n=40, sites=("A",))
    task = _SGDSite(sites["A"], "A", batch_size=8)
    task.setup()
    return task


def test_opacus_step_equals_a_per_example_loop(site: SiteTask) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in site.build_model().state_dict().items()}
    clip, steps, seed = 0.05, 4, 3
    got, seen, metrics, q = dpsgd_update(site, init, steps, seed, sigma=1e-9, clip=clip,  # noise sd 5e-11
                                         draw=torch.Generator().manual_seed(11))  # known draws, to replay below
    x, y = site.train_tensors()
    assert q == pytest.approx(8 / len(x)) and metrics["steps"] == steps
    # the reference: the same Poisson draws, each example's gradient clipped to `clip`, summed, / expected batch
    model = site.build_model()
    model.load_state_dict(init)
    opt = site.configure_optimizer(model)
    draw = torch.Generator().manual_seed(11)
    drawn, clipped = 0, 0
    for _ in range(steps):
        idx = torch.nonzero(torch.rand(len(x), generator=draw) < q)[:, 0]
        total = [torch.zeros_like(p) for p in model.parameters()]
        for i in idx:
            model.zero_grad()
            site.loss(model, (x[i:i + 1], y[i:i + 1])).backward()
            g = [p.grad.clone() for p in model.parameters()]
            scale = min(1.0, clip / float(torch.sqrt(sum((t ** 2).sum() for t in g))))
            clipped += scale < 1.0
            total = [a + b * scale for a, b in zip(total, g)]
        for p, t in zip(model.parameters(), total):
            p.grad = t / 8
        opt.step()
        drawn += len(idx)
    assert seen == drawn and clipped > drawn // 2  # the clipping was at work, not a no-op
    want = model.state_dict()
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert not all(torch.equal(got[k], init[k]) for k in init)  # it did train


def test_batchnorm_networks_are_refused(site: SiteTask) -> None:
    bn = SiteTask(site.manifest, "A", backbone="resnet10")
    with pytest.raises(ConfigError, match="BatchNorm"):
        dpsgd_update(bn, bn.build_model().state_dict(), 1, 0, sigma=1.0, clip=1.0)
    # and before any process starts, as the CLI's run would meet it
    with pytest.raises(ConfigError, match="BatchNorm"):
        check_task({"dp-mode": "sample", "dp-noise": 1.0, "backbone": "resnet10", "image-size": 32})
    check_task({"dp-mode": "sample", "dp-noise": 1.0})  # the small classifier is fine


def test_empty_poisson_batches_still_release_noise(site: SiteTask) -> None:
    """Batch 1 of 28 rows: about a third of the draws are empty; each still steps with noise only."""
    one = _SGDSite(site.manifest, "A", batch_size=1)
    init = {k: v.clone() for k, v in one.build_model().state_dict().items()}
    got, seen, metrics, q = dpsgd_update(one, init, 12, 0, sigma=1.0, clip=1.0)
    assert q == pytest.approx(1 / 28) and metrics["empty_batches"] >= 1 and seen >= 1
    assert all(torch.isfinite(v).all() for v in got.values()) and not torch.equal(got["0.weight"], init["0.weight"])


def test_dpsgd_noise_and_draws_are_fresh_each_run_and_training_without_them_is_not(site: SiteTask) -> None:
    """The same weights, seed and data: two DP-SGD runs differ (CSPRNG-seeded noise and Poisson draws); with the
    generators fixed (what the coordinator would have to know) they are identical, so only those draws differ."""
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in site.build_model().state_dict().items()}
    a = dpsgd_update(site, init, 3, 5, sigma=1.0, clip=1.0)[0]
    b = dpsgd_update(site, init, 3, 5, sigma=1.0, clip=1.0)[0]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    fixed = [dpsgd_update(site, init, 3, 5, sigma=1.0, clip=1.0, noise=torch.Generator().manual_seed(1),
                          draw=torch.Generator().manual_seed(2))[0] for _ in range(2)]
    assert all(torch.equal(fixed[0][k], fixed[1][k]) for k in a)
