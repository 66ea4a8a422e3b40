"""Slide predictions with their evidence: calibrated probability, referral decision, heatmap, top tiles, GeoJSON.

Reads features made by ``medsight wsi features`` and refuses features from another encoder than the one the
model was trained on (same weights SHA-256), since such features live in a different space.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.errors import ConfigError, DatasetError, InputNotFoundError
from medsight.files import atomic_write_text, atomic_write_with
from medsight.io.slide import open_slide
from medsight.pathology.evidence import write_attention_evidence
from medsight.pathology.features import FEATURES, load_features
from medsight.pathology.geojson import read_polygons
from medsight.pathology.mil_train import load_mil_model
from medsight.pathology.tiling import MANIFEST, load_tiling, locate_slide

log = logging.getLogger(__name__)


def top_tile_in_outline(boxes: np.ndarray, attention: np.ndarray, geojson: str | Path) -> bool:
    """Whether the centre of the most-attended tile lies inside the outline (any polygon of the GeoJSON)."""
    from matplotlib.path import Path as MplPath

    x, y, w, h = boxes[int(np.argmax(attention))]
    centre = (x + w / 2, y + h / 2)
    for rings in read_polygons(geojson):
        inside = MplPath(np.asarray(rings[0])).contains_point(centre)
        holes = any(MplPath(np.asarray(r)).contains_point(centre) for r in rings[1:])
        if inside and not holes:
            return True
    return False


def predict_slides(model: str | Path | Any, features_dir: str | Path, out_dir: str | Path, evidence: bool = True,
                   top_k: int = 8, progress: bool = True, allow_retired: bool = False) -> list[dict[str, Any]]:
    """Predict every slide with features under ``features_dir`` with the MIL package ``model`` (folder, registered
    NAME[@VERSION] or ``Package``; verified first); writes predictions.csv/json and evidence."""
    from tqdm import tqdm

    from medsight.safety.referral import ReferralPolicy
    from medsight.safety.temperature import load_calibration

    from medsight.pathology.packaging import mil_package

    features_dir, out_dir = Path(features_dir), Path(out_dir)
    pkg = mil_package(model, allow_retired=allow_retired)  # verified; a plain folder is refused
    model_dir = pkg.path
    mil, config = load_mil_model(model_dir)
    cal = load_calibration(pkg)  # only files the manifest lists
    policy = ReferralPolicy.load(pkg.file("referral.json")) if pkg.has("referral.json") else None
    files = sorted(features_dir.glob(f"*/{FEATURES}"))
    if not files:
        raise DatasetError(f"no */{FEATURES} here; run `medsight wsi features` first", features_dir)
    want = config["encoder"].get("weights_sha256")
    rows = []
    for f in tqdm(files, desc="predicting", unit="slide", disable=not progress):
        sid = f.parent.name
        feats = load_features(f)
        if feats.encoder.get("weights_sha256") != want:
            raise ConfigError(f"features of {sid} come from encoder {feats.encoder.get('encoder')} "
                              f"(weights {str(feats.encoder.get('weights_sha256'))[:12]}) but the model was trained on "
                              f"{config['encoder'].get('encoder')} ({str(want)[:12]}); extract features with that "
                              "encoder", f)
        if len(feats.features) == 0:
            rows.append({"slide_id": sid, "n_tiles": 0, "probability": None, "decision": "refer",
                         "reasons": ["no tissue tiles"]})
            continue
        with torch.no_grad():
            out = mil(torch.from_numpy(feats.features))
        z = float(out["logit"])
        zc = float(cal.apply(np.array([z]))[0]) if cal else z
        p = 1 / (1 + np.exp(-zc))
        decision = policy.decide({"low_confidence": 1 - max(p, 1 - p)}) if policy else None
        att = out["attention"].numpy()
        row: dict[str, Any] = {"slide_id": sid, "n_tiles": int(len(att)), "logit": round(z, 6),
                               "probability": round(float(p), 6), "predicted": _label(p),
                               "decision": decision.action if decision else "accept",
                               "reasons": list(decision.reasons) if decision else [],
                               "tiling_hash": feats.tiling_hash}
        if evidence:
            manifest = features_dir / sid / MANIFEST
            tiling = load_tiling(manifest) if manifest.exists() else None
            try:
                slide_path = locate_slide(tiling, manifest) if tiling else None
            except InputNotFoundError:
                slide_path = None
            if slide_path is None:
                log.warning("%s: slide file not found, evidence without the slide image is skipped", sid)
            else:
                mpp = tiling.slide["mpp"] if tiling.slide["mpp_source"] == "user" else None
                with open_slide(slide_path, mpp=mpp) as slide:
                    ev = write_attention_evidence(slide, feats.boxes, att, out_dir / sid, top_k, feats.tile_mpp,
                                                  feats.tile_size)
                row["evidence"] = {"heatmap": str(ev["heatmap"]), "geojson": str(ev["geojson"]),
                                   "top_tiles": ev["top_tiles"]}
        atomic_write_with(out_dir / sid / "attention.npy", lambda tmp: np.save(tmp, att), suffix=".npy")
        rows.append(row)
    atomic_write_text(out_dir / "predictions.json", json.dumps({"model": config["model"], "model_dir": str(model_dir),
                                                                "package_id": pkg.id, "package": pkg.label,
                                                                "slides": rows}, indent=1, default=str))
    _write_csv(out_dir / "predictions.csv", rows)
    return rows


def _label(p: float) -> str:
    return "tumour" if p >= 0.5 else "normal"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = ["slide_id", "n_tiles", "probability", "predicted", "decision", "reasons"]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in rows:
                w.writerow([r.get(c) if c != "reasons" else "; ".join(r.get("reasons", [])) for c in cols])
    atomic_write_with(path, write, suffix=".csv")
