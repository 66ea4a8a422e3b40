"""Train a slide-level MIL model on stored tile features, with a patient-level split and calibration.

Labels come from a CSV (``slide_id``, ``label`` 0/1, optional ``patient_id``); features from
``<features dir>/<slide_id>/features.npz``. The validation patients are held out from training (no patient's
slides on both sides), pick the best epoch (validation AUC, then loss), fit the temperature that calibrates the
slide probability (safety/temperature.py), and fit the referral threshold on confidence (safety/referral.py).
The training itself is a ``MILTask`` on the shared engine (engine/loop.py ``fit``): one bag per step, the best
epoch restored at the end.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.data.splits import patient_holdout
from medsight.engine.loop import fit
from medsight.engine.task import EngineConfig, Task
from medsight.errors import DatasetError
from medsight.files import atomic_write_text, atomic_write_with
from medsight.metrics.classification import roc_auc
from medsight.nets.mil import fit_standardiser, load_mil
from medsight.pathology.features import FEATURES, load_features

log = logging.getLogger(__name__)

LABELS = ("normal", "tumour")


@dataclass
class Bag:
    slide_id: str
    patient_id: str
    label: int
    features: torch.Tensor
    boxes: np.ndarray
    tiling_hash: str
    encoder: dict[str, Any]


def read_labels(path: str | Path) -> list[dict[str, str]]:
    """Rows of a label CSV; ``slide_id`` and ``label`` (0/1) are required, ``patient_id`` defaults to the slide."""
    from medsight.files import read_csv

    path = Path(path)
    rows = read_csv(path, "label CSV", dtype=str, keep_default_na=False).to_dict("records")
    if not rows or not {"slide_id", "label"} <= set(rows[0]):
        raise DatasetError("label CSV needs columns slide_id and label (0/1), and optionally patient_id", path)
    for r in rows:
        if r["label"] not in ("0", "1"):
            raise DatasetError(f"label of slide {r['slide_id']} must be 0 or 1, got {r['label']!r}", path)
        r["patient_id"] = r.get("patient_id") or r["slide_id"]
    return rows


def load_bags(labels_csv: str | Path, features_dir: str | Path, require_all: bool = True) -> list[Bag]:
    """One bag per labelled slide that has features; all must have the same encoder."""
    return bags_of(read_labels(labels_csv), features_dir, require_all)


def bags_of(rows: list[dict[str, str]], features_dir: str | Path, require_all: bool = True) -> list[Bag]:
    """``load_bags`` for label rows already read (a federated site keeps only its own rows)."""
    features_dir = Path(features_dir)
    bags = []
    for r in rows:
        p = features_dir / r["slide_id"] / FEATURES
        if not p.exists():
            if require_all:
                raise DatasetError(f"no features for slide {r['slide_id']}; run `medsight wsi features` on its "
                                   "tiles first", p)
            continue
        f = load_features(p)
        if len(f.features) == 0:
            log.warning("slide %s has no tissue tiles; left out", r["slide_id"])
            continue
        bags.append(Bag(r["slide_id"], r["patient_id"], int(r["label"]), torch.from_numpy(f.features),
                        f.boxes, f.tiling_hash, f.encoder))
    shas = {b.encoder.get("weights_sha256") for b in bags}
    if len(shas) > 1:
        raise DatasetError("features were made with different encoders; extract them all with one encoder",
                           features_dir)
    return bags


def patient_split(bags: list[Bag], val_share: float, seed: int) -> tuple[list[Bag], list[Bag]]:
    """(train, val) bags by the one patient splitter (``medsight.data.splits.patient_holdout``): every patient on
    one side, stratified by slide label. The share is raised to two patients when ``val_share`` would hold out
    fewer (at most half), so that a small cohort still validates on both classes (AUC picks the epoch)."""
    patients = sorted({b.patient_id for b in bags})
    share = min(max(val_share, 2 / len(patients)), 0.5) if patients else val_share
    try:
        mask = patient_holdout(np.array([b.patient_id for b in bags]), np.array([b.label for b in bags]),
                               share, seed)
    except DatasetError:
        mask = np.zeros(len(bags), dtype=bool)  # too few patients: refused below with the MIL wording
    val = {b.patient_id for b, h in zip(bags, mask) if h}
    train = [b for b in bags if b.patient_id not in val]
    held = [b for b in bags if b.patient_id in val]
    if not held or len({b.label for b in train}) < 2:
        raise DatasetError(f"{len(patients)} patient(s) are too few for a patient-level split with both classes on "
                           "each side; label more slides")
    return train, held


class MILTask(Task):
    """The engine Task for slide-level MIL: one bag per step, binary cross-entropy (+ CLAM's instance loss)."""

    selection = ("auc", "max")

    def selection_key(self, record: dict[str, Any]) -> float | None:
        """Validation AUC, ties (frequent on a few slides) broken by the lower validation loss."""
        auc, loss = record.get("auc"), record.get("loss_val")
        if auc is None or not np.isfinite(auc):
            return None
        return -float(auc) + 1e-6 * float(loss)

    def batch_size(self, batch: Bag) -> int:
        return 1

    def __init__(self, model_name: str, in_dim: int, train: list[Bag], val: list[Bag], lr: float = 1e-3,
                 weight_decay: float = 1e-4, model_kwargs: dict[str, Any] | None = None) -> None:
        self.model_name, self.in_dim = model_name, in_dim
        self.train, self.val = train, val
        self.lr, self.weight_decay = lr, weight_decay
        self.model_kwargs = model_kwargs or {}

    def build_model(self) -> torch.nn.Module:
        model = load_mil(self.model_name)(self.in_dim, **self.model_kwargs)
        if hasattr(model, "proj"):
            with torch.no_grad():
                fit_standardiser(model, torch.cat([b.features for b in self.train]))
        return model

    def configure_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[Bag]:
        return [self.train[i] for i in rng.permutation(len(self.train))]

    def loss(self, model: torch.nn.Module, batch: Bag) -> torch.Tensor:
        out = model(batch.features)
        y = torch.tensor(float(batch.label))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logit"], y)
        if hasattr(model, "instance_loss"):
            w = model.instance_weight
            loss = (1 - w) * loss + w * model.instance_loss(out, batch.label)
        return loss

    @torch.no_grad()
    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        z = np.array([float(model(b.features)["logit"]) for b in self.val])
        y = np.array([b.label for b in self.val])
        loss = float(np.mean(np.logaddexp(0, z) - y * z))
        return {"auc": roc_auc(y, z) if len(set(y)) == 2 else float("nan"), "loss_val": loss}


def fit_mil(task: MILTask, epochs: int, seed: int, quiet: bool = True) -> tuple[torch.nn.Module, list[dict], int]:
    """Train through the engine with one torch thread (a bag of a few hundred rows: threads only add overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = fit(task, EngineConfig(epochs=epochs, seed=seed, quiet=quiet, name="train-mil", tensorboard=False))
    finally:
        torch.set_num_threads(threads)
    best = res.best_epoch if res.best_epoch is not None else len(res.history) - 1
    return res.model, res.history, best


@torch.no_grad()
def bag_logits(model: torch.nn.Module, bags: list[Bag]) -> tuple[np.ndarray, list[np.ndarray]]:
    model.eval()
    outs = [model(b.features) for b in bags]
    return np.array([float(o["logit"]) for o in outs]), [o["attention"].numpy() for o in outs]


def feature_encoder_init(ref: str | Path, bags: list[Bag]) -> dict[str, Any]:
    """``train-mil --init PACKAGE``: a MIL model learns on stored tile features, not on pixels, so the encoder
    package selects the features: it is verified (``load_encoder_package``), every bag must have been extracted
    with exactly it (``wsi features --encoder pretrained --weights PACKAGE``), and the features' width must be its
    encoder's. Returns the provenance the MIL package records (config, manifest, card)."""
    from medsight.errors import ConfigError
    from medsight.package.encoder import encoder_provenance, load_encoder_package

    pkg, state, desc = load_encoder_package(ref)
    try:
        width = int(desc["config"]["filters"][-1])
    except (KeyError, TypeError, IndexError) as err:
        raise ConfigError(f"encoder package {pkg.label} was pretrained for a classification backbone "
                          f"({desc.get('network')}), not as a tile feature encoder; pass a package from "
                          "`medsight pretrain --plan`") from err
    other = sorted({str(b.encoder.get("package_id") or b.encoder.get("encoder")) for b in bags} - {pkg.id})
    if other:
        raise ConfigError(f"features were extracted with {other[0][:24]}, not with encoder package {pkg.label}; "
                          f"run `medsight wsi features TILES --encoder pretrained --weights {ref}` first")
    dim = int(bags[0].features.shape[1])
    if dim != width:
        raise ConfigError(f"encoder package {pkg.label} does not fit these features: it gives {width} features per "
                          f"tile, the features have {dim}")
    return encoder_provenance(pkg, desc, len(state))


def train_mil(labels_csv: str | Path, features_dir: str | Path, out_dir: str | Path, model_name: str = "abmil",
              epochs: int = 40, seed: int = 0, val_share: float = 0.25, lr: float = 1e-3,
              bags: list[Bag] | None = None, init: str | Path | None = None) -> dict[str, Any]:
    """Train, calibrate and save a MIL model folder; returns its summary (validation AUC, ECE, best epoch).
    ``init``: the encoder package the features must come from (``feature_encoder_init``)."""
    from medsight.safety.referral import ReferralPolicy
    from medsight.safety.temperature import fit_calibration, save_calibration

    out_dir = Path(out_dir)
    bags = bags if bags is not None else load_bags(labels_csv, features_dir)
    if not bags:
        raise DatasetError("no labelled slide has features", features_dir)
    init_record = feature_encoder_init(init, bags) if init is not None else None
    train, val = patient_split(bags, val_share, seed)
    task = MILTask(model_name, int(bags[0].features.shape[1]), train, val, lr)
    t0 = time.perf_counter()
    model, history, best_epoch = fit_mil(task, epochs, seed)
    seconds = time.perf_counter() - t0
    z, _ = bag_logits(model, val)
    y = np.array([b.label for b in val])
    cal = fit_calibration(z, y, [LABELS[1]], activation="sigmoid")
    p = 1 / (1 + np.exp(-np.asarray(cal.apply(z))))
    policy = ReferralPolicy.fit_on_validation({"low_confidence": list(1 - np.maximum(p, 1 - p))}, target_keep=0.9)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out_dir / "model.pt", lambda tmp: torch.save(model.state_dict(), tmp), suffix=".pt")
    save_calibration(out_dir, cal)
    policy.save(out_dir / "referral.json")
    config = {"format": "medsight-mil", "version": 1, "model": model_name, "in_dim": task.in_dim,
              "labels": list(LABELS), "encoder": bags[0].encoder, "seed": seed, "epochs": epochs, "lr": lr,
              "best_epoch": best_epoch, "train_seconds": round(seconds, 2),
              "split": {"train": sorted(b.slide_id for b in train), "val": sorted(b.slide_id for b in val),
                        "unit": "patient"},
              "tiling_hashes": {b.slide_id: b.tiling_hash for b in bags},
              "engine": {"best_epoch": best_epoch, "history": "history.json"},
              "validation": {"auc": history[best_epoch]["auc"], "loss": history[best_epoch]["loss_val"],
                             **{k: v for k, v in cal.fit.items() if k.startswith(("ece", "nll"))}}}
    if init_record is not None:
        config["init"] = init_record
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=1))
    atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
    return config


def load_mil_model(model_dir: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained MIL model and its config."""
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"not a MIL model folder ({err}); train one with `medsight train-mil`", model_dir) from err
    if config.get("format") != "medsight-mil":
        raise DatasetError("not a MIL model folder (config.json format differs)", model_dir)
    model = load_mil(config["model"])(config["in_dim"])
    model.load_state_dict(torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), config
