"""The engine: one loop, checked against a hand-written SGD, exact resume, selection, budget, federated step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medsight.engine.callbacks import Callback
from medsight.engine.loop import fit, local_update
from medsight.engine.task import EngineConfig, Task
from medsight.errors import ConfigError

X = np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32)
Y = (X @ np.array([1.5, -2.0, 0.5], dtype=np.float32) + 0.3).astype(np.float32)


class LinearTask(Task):
    """Least squares with a linear layer; batches of 8 in an order drawn from the epoch generator."""

    def __init__(self, lr: float = 0.05, scripted: list[float] | None = None) -> None:
        self.lr, self.scripted = lr, scripted
        self.selection = ("score", "max") if scripted else None
        self.orders: list[np.ndarray] = []

    def build_model(self) -> nn.Module:
        return nn.Linear(3, 1)

    def configure_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=self.lr)

    def epoch_batches(self, epoch, rng):
        order = rng.permutation(len(X))
        self.orders.append(order)
        for i in range(0, len(X), 8):
            idx = order[i:i + 8]
            yield torch.from_numpy(X[idx]), torch.from_numpy(Y[idx])[:, None]

    def steps_per_epoch(self):
        return 3

    def loss(self, model, b):
        return nn.functional.mse_loss(model(b[0]), b[1])

    def validate(self, model):
        if not self.scripted:
            return {}
        return {"score": self.scripted[len(self.orders) - 1]}


def test_fit_matches_hand_written_sgd(tmp_path):
    task = LinearTask()
    res = fit(task, EngineConfig(epochs=2, seed=3, out_dir=tmp_path, quiet=True))
    torch.manual_seed(3)
    ref = nn.Linear(3, 1)  # same initialisation: the engine seeds torch with the seed before build_model
    w, b = ref.weight.detach().numpy().astype(np.float64).ravel(), float(ref.bias.detach())
    for order in task.orders:  # plain NumPy gradient descent on the same batches
        for i in range(0, len(X), 8):
            idx = order[i:i + 8]
            err = X[idx] @ w + b - Y[idx]
            w, b = w - 0.05 * 2 * X[idx].T @ err / len(idx), b - 0.05 * 2 * err.mean()
    np.testing.assert_allclose(res.model.weight.detach().numpy().ravel(), w, rtol=1e-4, atol=1e-5)
    assert abs(float(res.model.bias.detach()) - b) < 1e-4
    assert [r["epoch"] for r in res.history] == [0, 1] and res.history[1]["loss"] < res.history[0]["loss"]
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 2 and (tmp_path / "checkpoint.pt").is_file()


class Killed(BaseException):
    pass


class DieAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, record, model, state):
        if record["epoch"] == self.epoch:
            raise Killed()


def test_kill_and_resume_with_one_cycle_gives_identical_weights(tmp_path):
    cfg = dict(epochs=4, seed=1, lr_schedule="onecycle", lr=0.1, quiet=True)
    straight = fit(LinearTask(), EngineConfig(**cfg, out_dir=tmp_path / "a"))
    with pytest.raises(Killed):
        fit(LinearTask(), EngineConfig(**cfg, out_dir=tmp_path / "b", callbacks=[DieAfter(1)]))
    resumed = fit(LinearTask(), EngineConfig(**cfg, out_dir=tmp_path / "b"))
    assert resumed.start_epoch == 2 and len(resumed.history) == 4
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [r["lr"] for r in straight.history] == [r["lr"] for r in resumed.history]
    with pytest.raises(ConfigError, match="different plan, seed or epoch count .seed differ"):
        fit(LinearTask(), EngineConfig(**{**cfg, "seed": 2}, out_dir=tmp_path / "b"))


def test_best_epoch_is_selected_and_restored(tmp_path):
    weights = []

    class Keep(Callback):
        def on_epoch_end(self, record, model, state):
            weights.append({k: v.clone() for k, v in model.state_dict().items()})

    res = fit(LinearTask(scripted=[0.2, 0.9, 0.5]), EngineConfig(epochs=3, quiet=True, out_dir=tmp_path,
                                                                 callbacks=[Keep()]))
    assert res.best_epoch == 1
    assert all(torch.equal(v, weights[1][k]) for k, v in res.model.state_dict().items())
    assert not torch.equal(res.model.weight, weights[2]["weight"])


def test_time_budget_stops_after_the_epoch_that_crosses_it():
    res = fit(LinearTask(), EngineConfig(epochs=5, max_seconds=0.0, quiet=True))
    assert res.stopped_by_time_budget and len(res.history) == 1


def test_local_update_is_reproducible_and_counts_examples():
    start = nn.Linear(3, 1).state_dict()
    a, n, m = local_update(LinearTask(), start, steps=5, seed=4, round=2)
    b, _, _ = local_update(LinearTask(), start, steps=5, seed=4, round=2)
    c, _, _ = local_update(LinearTask(), start, steps=5, seed=4, round=3)
    assert n == 5 * 8 and m["steps"] == 5 and np.isfinite(m["loss"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["weight"], c["weight"])  # another round draws other batches
    assert not torch.equal(a["weight"], start["weight"])


def test_no_second_optimiser_step_loop_outside_the_engine():
    """Acceptance of issue 14: training steps happen only in engine/loop.py. (Temperature scaling fits one
    scalar with L-BFGS in safety/temperature.py: a calibration fit, not a training loop.)"""
    from pathlib import Path

    import medsight

    root = Path(medsight.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("engine/") or rel == "safety/temperature.py":
            continue
        text = path.read_text()
        if ".backward(" in text or "opt.step(" in text or "optimizer.step(" in text:
            found.append(rel)
    assert found == []
