"""MC dropout must really sample with dropout on, and be deterministic with it off."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.safety.ensembles import ensemble_predict
from medsight.safety.mc_dropout import mc_dropout, mc_dropout_predict


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))


def test_dropout_off_is_deterministic_and_on_samples() -> None:
    net = _net().eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    samples = mc_dropout_predict(net, x, n_samples=10, transform=lambda z: z.softmax(1))
    assert samples.shape == (10, 5, 3)
    assert not torch.allclose(samples[0], samples[1])
    assert (samples.std(0) > 0).all()
    torch.testing.assert_close(samples.sum(-1), torch.ones(10, 5, dtype=samples.dtype))
    # same seed, same samples; the global RNG is left alone
    state = torch.get_rng_state()
    torch.testing.assert_close(mc_dropout_predict(net, x, n_samples=10, transform=lambda z: z.softmax(1)), samples)
    assert torch.equal(torch.get_rng_state(), state)


def test_only_dropout_layers_switch_and_modes_are_restored() -> None:
    net = _net().train()
    bn = net[1]
    running = bn.running_mean.clone()
    x = torch.randn(4, 8)
    with mc_dropout(net):
        assert net[3].training and not bn.training
        with torch.no_grad():
            net(x)
    assert torch.equal(bn.running_mean, running)  # batch-norm statistics untouched
    assert all(m.training for m in net.modules())  # train mode restored
    with mc_dropout(net.eval(), p=0.0):
        with torch.no_grad():
            assert torch.equal(net(x), net(x))  # p overridden to 0: no sampling
    assert net[3].p == 0.5


def test_model_without_dropout_is_refused() -> None:
    with pytest.raises(ConfigError, match="no dropout"):
        mc_dropout_predict(nn.Linear(2, 2), torch.zeros(1, 2))


def test_ensemble_stacks_members_in_eval_mode() -> None:
    nets = [_net(), _net()]
    with torch.no_grad():
        nets[1][0].weight.add_(1.0)
    x = torch.randn(3, 8)
    out = ensemble_predict(nets, x)
    assert out.shape == (2, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(out[0], nets[0].eval()(x))
    assert not torch.allclose(out[0], out[1])
