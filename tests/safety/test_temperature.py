"""Temperature / vector scaling against an independent SciPy optimisation of the same NLL."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_expit, log_softmax

from medsight.errors import ConfigError, IntegrityError
from medsight.metrics.calibration import expected_calibration_error
from medsight.safety.temperature import (Calibration, apply_calibration, fit_calibration, fit_temperature_sigmoid,
                                         fit_temperature_softmax, fit_vector_scaling, load_calibration,
                                         save_calibration)


def _overconfident(n: int = 600, c: int = 4, scale: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a classifier that is right ~70% of the time but scaled up (over-confident) by ``scale``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1, (n, c))
    z[np.arange(n), y] += 1.5
    return z * scale, y


def _nll_softmax(z: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(z, axis=1)[np.arange(len(y)), y].mean())


def test_softmax_temperature_matches_scipy_minimize_scalar() -> None:
    z, y = _overconfident()
    t = fit_temperature_softmax(z, y)
    ref = minimize_scalar(lambda t: _nll_softmax(z / t, y), bounds=(0.05, 20), method="bounded",
                          options={"xatol": 1e-8}).x
    assert t == pytest.approx(ref, rel=1e-4)
    assert t > 1.5  # the logits were scaled up by 3: the fit must cool them down


def test_sigmoid_temperature_per_label_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (500, 2))
    z = np.stack([(2 * y[:, 0] - 1) * 1.0 + rng.normal(0, 1, 500),
                  (2 * y[:, 1] - 1) * 0.5 + rng.normal(0, 1, 500)], axis=1) * np.array([4.0, 0.5])
    temps = fit_temperature_sigmoid(z, y)

    def nll(t: float, j: int) -> float:
        return float(-(y[:, j] * log_expit(z[:, j] / t) + (1 - y[:, j]) * log_expit(-z[:, j] / t)).mean())

    for j in range(2):
        ref = minimize_scalar(lambda t: nll(t, j), bounds=(0.05, 20), method="bounded", options={"xatol": 1e-8}).x
        assert temps[j] == pytest.approx(ref, rel=1e-4)
    assert temps[0] > 1 > temps[1]  # label 0 over-confident, label 1 under-confident


def test_vector_scaling_matches_scipy_bfgs_and_beats_temperature() -> None:
    z, y = _overconfident(c=3, seed=2)
    z = z * np.array([1.0, 2.0, 0.5])  # class-dependent miscalibration that one temperature cannot fix
    w, b = fit_vector_scaling(z, y)
    res = minimize(lambda v: _nll_softmax(z * v[:3] + v[3:], y), np.r_[np.ones(3), np.zeros(3)], method="BFGS",
                   options={"gtol": 1e-9})
    assert _nll_softmax(z * np.asarray(w) + b, y) == pytest.approx(res.fun, abs=1e-6)
    t = fit_temperature_softmax(z, y)
    assert _nll_softmax(z * np.asarray(w) + b, y) < _nll_softmax(z / t, y) - 1e-3


def test_fit_calibration_lowers_ece_and_round_trips(tmp_path) -> None:
    z, y = _overconfident()
    cal = fit_calibration(z, y, ["a", "b", "c", "d"])
    conf_before, conf_after = torch.softmax(torch.as_tensor(z), 1).numpy(), torch.softmax(
        torch.as_tensor(cal.apply(z)), 1).numpy()
    correct = (z.argmax(1) == y).astype(int)
    ece_before = expected_calibration_error(correct, conf_before.max(1))
    ece_after = expected_calibration_error(correct, conf_after.max(1))
    assert ece_after < ece_before / 2
    assert cal.fit["ece_before"] == pytest.approx(ece_before) and cal.fit["ece_after"] == pytest.approx(ece_after)
    assert cal.fit["nll_after"] < cal.fit["nll_before"]
    assert (cal.apply(z).argmax(1) == z.argmax(1)).all()  # temperature never changes the predicted class

    path = save_calibration(tmp_path, cal)
    assert json.loads(path.read_text())["temperature"]["a"] == pytest.approx(cal.temperature["a"])
    loaded = load_calibration(tmp_path)
    np.testing.assert_allclose(loaded.apply(z), cal.apply(z))
    zt = torch.as_tensor(z, dtype=torch.float32)
    np.testing.assert_allclose(apply_calibration(zt, tmp_path).numpy(), cal.apply(z), rtol=1e-5)
    assert load_calibration(tmp_path / "nothing-here") is None


def test_bad_inputs_give_actionable_errors(tmp_path) -> None:
    cal = Calibration("temperature", "sigmoid", ["lesion"], {"lesion": 2.0})
    with pytest.raises(ConfigError, match="1 outputs"):
        cal.apply(np.zeros((3, 2)))
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="calibration.json"):
        load_calibration(tmp_path)
    with pytest.raises(ConfigError, match="vector scaling"):
        fit_calibration(np.zeros((4, 1)), np.array([[0], [1], [0], [1]]), ["x"], activation="sigmoid", method="vector")


def test_separable_validation_keeps_t1_instead_of_the_sharpening_bound() -> None:
    """A validation set the model already gets all right has no NLL minimum: SciPy's bounded search runs to the
    0.05 bound (a 20x sharpening, what the MIL slides' fit gave). The fit must keep T = 1 and say why; one wrong
    case makes the minimum interior again, and then the fit matches SciPy."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 12)
    z = (2 * y - 1) * rng.uniform(0.5, 3.0, 12)  # every case on its own side of 0
    ref = minimize_scalar(lambda t: float(-(y * log_expit(z / t) + (1 - y) * log_expit(-z / t)).mean()),
                          bounds=(0.05, 20), method="bounded", options={"xatol": 1e-8}).x
    assert ref < 0.06  # the unguarded optimum is the lower bound
    cal = fit_calibration(z, y, ["tumour"], activation="sigmoid")
    assert cal.temperature == {"tumour": 1.0} and cal.fit["separable_kept_t1"] == ["tumour"]
    zs = np.stack([z, -z], axis=1)
    ys = (y == 0).astype(int)  # softmax: class 1 wins exactly where z < 0, i.e. y == 0
    assert fit_temperature_softmax(zs, ys) == 1.0
    z_wrong = z.copy()
    z_wrong[0] = -z_wrong[0]  # one confident mistake
    t = fit_temperature_sigmoid(z_wrong, y)[0]
    ref_wrong = minimize_scalar(lambda t: float(-(y * log_expit(z_wrong / t) + (1 - y) * log_expit(-z_wrong / t)).mean()),
                                bounds=(0.05, 20), method="bounded", options={"xatol": 1e-8}).x
    assert t == pytest.approx(ref_wrong, rel=1e-4) and 0.06 < t
