"""Evaluate the whole safety layer of a classifier: calibration, OOD detection, referral and risk-coverage.

Works on anything shaped like the CLASSIFIER contract's ``ClassifierBundle`` (``preprocess(Image) -> Tensor``,
``logits_and_features(x) -> (logits, features)``, ``config``), so the demo stage and the benchmark share it.

Sign conventions: every detector score is "higher = more out-of-distribution"; OOD is the positive class for
AUROC; the in-distribution reference for OOD metrics is the held-out test set of the training sites.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from medsight.errors import ConfigError
from medsight.image import Image
from medsight.safety.mc_dropout import dropout_layers
from medsight.safety.ood import Mahalanobis, energy_score, msp_score, ood_detection_metrics
from medsight.safety.referral import ReferralPolicy
from medsight.safety.risk_coverage import aurc, risk_at_coverage
from medsight.safety.temperature import Calibration, fit_calibration, top_label_confidence

log = logging.getLogger(__name__)
DETECTORS = ("msp", "energy", "mahalanobis")


class ClassifierLike(Protocol):
    config: Any

    def preprocess(self, image: Image) -> torch.Tensor: ...

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class Outputs:
    """Raw logits (N, C) and penultimate features (N, D) of a set of images."""

    logits: np.ndarray
    features: np.ndarray


def _cfg(bundle: ClassifierLike, key: str, default: Any = None) -> Any:
    cfg = bundle.config
    return cfg.get(key, default) if isinstance(cfg, Mapping) else getattr(cfg, key, default)


def activation_of(bundle: ClassifierLike) -> str:
    """'sigmoid' for multi-label / single-logit heads, 'softmax' otherwise (config key ``activation`` wins)."""
    act = _cfg(bundle, "activation")
    if act in ("sigmoid", "softmax"):
        return act
    if _cfg(bundle, "multi_label", False) or _cfg(bundle, "multilabel", False):
        return "sigmoid"
    return "sigmoid" if len(label_names(bundle)) == 1 else "softmax"


def label_names(bundle: ClassifierLike) -> list[str]:
    labels = _cfg(bundle, "labels")
    if not labels:
        raise ConfigError("the classifier config names no labels; cannot calibrate or refer per label")
    return [str(x) for x in (labels.keys() if isinstance(labels, Mapping) else labels)]


def _model_of(bundle: ClassifierLike) -> torch.nn.Module | None:
    return getattr(bundle, "model", None)


@torch.no_grad()
def run_model(bundle: ClassifierLike, images: Sequence[Image], batch_size: int = 32, quiet: bool = True,
              desc: str = "scoring") -> Outputs:
    """Logits and features of ``images`` in eval mode (dropout off), in batches, with a progress bar."""
    model = _model_of(bundle)
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    logits, feats = [], []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=quiet, leave=False):
            xs = [bundle.preprocess(im) for im in images[start:start + batch_size]]
            x = torch.cat(xs) if _has_batch_dim(xs[0], bundle) else torch.stack(xs)
            z, f = bundle.logits_and_features(x)
            logits.append(z.detach().double().cpu().reshape(len(xs), -1).numpy())
            feats.append(f.detach().double().cpu().reshape(len(xs), -1).numpy())
    finally:
        if model is not None:
            model.train(was_training)
    return Outputs(np.concatenate(logits), np.concatenate(feats))


def _has_batch_dim(x: torch.Tensor, bundle: ClassifierLike) -> bool:
    """Whether ``preprocess`` already returned a batch of one ((1, C, *spatial))."""
    dims = _cfg(bundle, "spatial_dims") or _cfg(bundle, "ndim") or len(_cfg(bundle, "input_size", ()) or ()) or 2
    return x.ndim == int(dims) + 2


@torch.no_grad()
def mc_dropout_mutual_information(bundle: ClassifierLike, images: Sequence[Image], activation: str,
                                  n_samples: int = 10, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Per-image mutual information (nats) over ``n_samples`` MC-dropout passes of ``bundle.model``.

    Sigmoid heads: the mean over labels of each label's two-class mutual information.
    """
    from medsight.safety.mc_dropout import mc_dropout_predict
    from medsight.safety.uncertainty import mutual_information

    model = _model_of(bundle)
    if model is None:
        raise ConfigError("the classifier bundle exposes no .model, so MC dropout cannot run")
    out = []
    for start in range(0, len(images), batch_size):
        xs = [bundle.preprocess(im) for im in images[start:start + batch_size]]
        x = torch.cat(xs) if _has_batch_dim(xs[0], bundle) else torch.stack(xs)
        z = mc_dropout_predict(model, x, n_samples, seed=seed + start).double().reshape(n_samples, len(xs), -1)
        if activation == "softmax":
            out.append(mutual_information(z.softmax(-1).numpy()))
        else:
            p = torch.sigmoid(z)
            two = torch.stack([1 - p, p], dim=2)  # (S, N, 2, L)
            out.append(mutual_information(two.numpy()).mean(axis=-1))
    return np.concatenate(out)


def _class_codes(targets: np.ndarray) -> np.ndarray:
    """One integer class per case, for class-conditional Mahalanobis means (multi-label rows -> bit codes)."""
    t = np.asarray(targets)
    if t.ndim == 1:
        return t.astype(int)
    return (t.astype(int) * (1 << np.arange(t.shape[1]))).sum(axis=1)


def detector_scores(out: Outputs, maha: Mahalanobis, activation: str,
                    calibration: Calibration | None = None) -> dict[str, np.ndarray]:
    """Per-image OOD scores of every detector (MSP on calibrated logits; energy on raw logits, T = 1)."""
    z_cal = calibration.apply(out.logits) if calibration is not None else out.logits
    return {"msp": msp_score(z_cal, activation), "energy": energy_score(out.logits, activation=activation),
            "mahalanobis": maha.score(out.features)}


def _ece(logits: np.ndarray, targets: np.ndarray, activation: str) -> float:
    from medsight.metrics.calibration import expected_calibration_error

    conf, correct = top_label_confidence(logits, targets, activation)
    return float(expected_calibration_error(correct, conf))


def _curve(logits: np.ndarray, targets: np.ndarray, activation: str) -> dict[str, list[float]]:
    from medsight.metrics.calibration import reliability_curve

    conf, correct = top_label_confidence(logits, targets, activation)
    return {k: np.asarray(v).tolist() for k, v in reliability_curve(correct, conf).items()}


def _errors_and_uncertainty(logits: np.ndarray, targets: np.ndarray, activation: str,
                            thresholds: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per case: 1 when the (primary-label) decision is wrong, and its uncertainty (calibrated 1 - MSP)."""
    t = np.asarray(targets)
    if activation == "softmax":
        return (logits.argmax(1) != t).astype(float), msp_score(logits, "softmax")
    z = logits.reshape(len(logits), -1)[:, 0]
    y = t.reshape(len(t), -1)[:, 0]
    thr = float(thresholds[0]) if thresholds else 0.5
    p = 1 / (1 + np.exp(-z))
    return ((p >= thr).astype(int) != y).astype(float), msp_score(z, "sigmoid")


def evaluate_classifier_safety(
    bundle: ClassifierLike,
    train: tuple[Sequence[Image], np.ndarray],
    validation: tuple[Sequence[Image], np.ndarray],
    test_sets: Mapping[str, tuple[Sequence[Image], np.ndarray]],
    ood_sets: Mapping[str, Sequence[Image]],
    in_distribution: str,
    target_keep: float = 0.95,
    quiet: bool = True,
    mc_samples: int = 10,
) -> dict[str, Any]:
    """Fit calibration (on validation), Mahalanobis (on training features) and a referral policy (on validation),
    then report ECE before/after per labelled test set, every detector on every OOD set (against the
    ``in_distribution`` test set), referral keep rates, and risk-coverage per labelled test set.

    Labelled test sets also count as OOD candidates (e.g. the unseen site) and are scored like the others.
    When the model has dropout layers and ``mc_samples > 0``, MC-dropout mutual information is a fourth detector.
    """
    if in_distribution not in test_sets:
        raise ConfigError(f"in_distribution={in_distribution!r} is not one of the test sets {sorted(test_sets)}")
    act, labels = activation_of(bundle), label_names(bundle)
    thresholds = _thresholds(bundle, labels)
    outs = {"train": run_model(bundle, train[0], quiet=quiet, desc="train"),
            "validation": run_model(bundle, validation[0], quiet=quiet, desc="validation")}
    for name, (imgs, _) in test_sets.items():
        outs[name] = run_model(bundle, imgs, quiet=quiet, desc=name)
    for name, imgs in ood_sets.items():
        outs[name] = run_model(bundle, imgs, quiet=quiet, desc=name)
    y_val = _targets(validation[1], act)
    cal = fit_calibration(outs["validation"].logits if act == "softmax" else outs["validation"].logits.reshape(y_val.shape),
                          y_val, labels, act)
    maha = Mahalanobis().fit(outs["train"].features, _class_codes(_targets(train[1], act)))
    scores = {k: detector_scores(o, maha, act, cal) for k, o in outs.items()}
    model = _model_of(bundle)
    detectors = list(DETECTORS)
    if mc_samples > 0 and model is not None and dropout_layers(model):
        sets = {"validation": validation[0], **{k: v[0] for k, v in test_sets.items()}, **ood_sets}
        for k, imgs in sets.items():
            scores[k]["mc_dropout_mi"] = mc_dropout_mutual_information(bundle, imgs, act, mc_samples)
        detectors.append("mc_dropout_mi")

    result: dict[str, Any] = {"activation": act, "labels": labels, "temperature": cal.temperature,
                              "n": {k: int(len(o.logits)) for k, o in outs.items()}, "calibration": {}, "ood": {},
                              "referral": {}, "risk_coverage": {}}
    for name, (_, y) in test_sets.items():
        yy = _targets(y, act)
        z = outs[name].logits.reshape(yy.shape) if act == "sigmoid" else outs[name].logits
        result["calibration"][name] = {"ece_before": _ece(z, yy, act), "ece_after": _ece(cal.apply(z), yy, act),
                                       "reliability_before": _curve(z, yy, act),
                                       "reliability_after": _curve(cal.apply(z), yy, act)}
        err, unc = _errors_and_uncertainty(cal.apply(z), yy, act, thresholds)
        result["risk_coverage"][name] = {
            "error_at_100": risk_at_coverage(err, unc, 1.0), "error_at_80": risk_at_coverage(err, unc, 0.8),
            "aurc": aurc(err, unc), "n": int(len(err)),
        }
    ref = scores[in_distribution]
    for name in [n for n in test_sets if n != in_distribution] + list(ood_sets):
        result["ood"][name] = {d: ood_detection_metrics(ref[d], scores[name][d]) for d in detectors}

    policy = ReferralPolicy.fit_on_validation(
        {"low_confidence": scores["validation"]["msp"], "out_of_distribution": scores["validation"]["mahalanobis"]},
        target_keep=target_keep)
    for name in list(test_sets) + list(ood_sets):
        dec = policy.decide_many({"low_confidence": scores[name]["msp"],
                                  "out_of_distribution": scores[name]["mahalanobis"]})
        result["referral"][name] = {"kept": float(np.mean([d.accepted for d in dec])), "n": len(dec)}
    result["referral"]["thresholds"] = policy.thresholds
    result["artifacts"] = {"calibration": cal, "mahalanobis": maha, "policy": policy}
    return result


def _targets(y: np.ndarray, activation: str) -> np.ndarray:
    t = np.asarray(y)
    return t.astype(int) if activation == "softmax" else t.reshape(len(t), -1).astype(int)


def _thresholds(bundle: ClassifierLike, labels: list[str]) -> list[float] | None:
    th = _cfg(bundle, "thresholds")
    if th is None:
        return None
    if isinstance(th, Mapping):
        return [float(th.get(n, 0.5)) for n in labels]
    return [float(v) for v in th]
