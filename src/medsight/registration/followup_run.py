"""``medsight follow-up`` as a library call: register prior -> current, match lesions, write every output as one
folder (``lesion_changes.csv``, ``followup.json``, ``evidence.png``, ``registration/``, and for DICOM inputs
``prior_seg.dcm``, ``prior_sr.dcm``, ``current_seg.dcm``, ``current_sr.dcm``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.files import atomic_dir
from medsight.image import Image
from medsight.io.dicom_out import Algorithm
from medsight.registration.followup import RULE, Change, Lesions, lesions_of, match_lesions, table_rows
from medsight.registration.followup_report import changes_csv, dicom_source, evidence_png, seg_and_sr, tracking_seed
from medsight.registration.register import align, check_pair, write_files

OUTPUTS = ("lesion_changes.csv", "followup.json", "evidence.png", "registration", "prior_seg.dcm", "prior_sr.dcm",
           "current_seg.dcm", "current_sr.dcm")


@dataclass
class FollowUp:
    tracks: list[Change]
    prior: Lesions
    current: Lesions
    summary: dict[str, Any]


def follow_up(prior: Image, prior_mask: np.ndarray, current: Image, current_mask: np.ndarray, out: str | Path, *,
              prior_path: str | Path | None = None, current_path: str | Path | None = None, mode: str = "affine",
              force: bool = False, algorithm: Algorithm | None = None) -> FollowUp:
    """Register ``prior`` onto ``current``, track the lesions of the two masks (each on its own image's grid)."""
    checks = check_pair(current, prior, current_path, prior_path, force=force)
    lp, lc = lesions_of(prior_mask, prior.geometry), lesions_of(current_mask, current.geometry)
    reg = align(current, prior, mode, moving_labels=Image(lp.ids, prior.geometry, prior.provenance))
    carried = np.asarray(reg.moved_labels.array)
    inverse = reg.result.linear.GetInverse()  # prior world -> current world (linear part)
    centres: dict[int, np.ndarray] = {}
    for row in lp.rows:
        at = np.argwhere(carried == row["lesion_id"])
        centres[row["lesion_id"]] = (current.geometry.index_to_world(at.mean(0)) if len(at) else
                                     np.asarray(inverse.TransformPoint([float(v) for v in row["centroid"]])))
    tracks = match_lesions(lp, carried, lc, centres)
    counts = {s: sum(t.status == s for t in tracks) for s in ("new", "resolved", "stable", "growing", "shrinking")}
    summary = {"rule": RULE, "n_tracks": len(tracks), "status_counts": counts, "unit": "lesion",
               "n_prior_lesions": len(lp.rows), "n_current_lesions": len(lc.rows),
               "registration": {"mode": mode, "seconds": reg.quality["seconds"], "metric": reg.quality["metric"],
                                "jacobian": reg.quality["jacobian"]}, "checks": checks, "dicom": None}
    sources = (dicom_source(prior_path), dicom_source(current_path)) if prior_path and current_path else (None, None)
    with atomic_dir(out, replaces=OUTPUTS) as tmp:
        write_files(reg, tmp / "registration", checks)
        (tmp / "lesion_changes.csv").write_text(changes_csv(tracks))
        (tmp / "evidence.png").write_bytes(evidence_png(reg.moved, current, carried, lc.ids, tracks))
        if sources[0] and sources[1]:
            algo = algorithm or Algorithm("medsight follow-up (given label maps)", "labels")
            seed = tracking_seed(*sources)
            written = []
            for when, lesions, image, source in (("prior", lp, prior, sources[0]), ("current", lc, current, sources[1])):
                seg, sr = seg_and_sr(source, lesions, image, tracks, when, seed, algo)
                if seg is not None:
                    seg.save_as(tmp / f"{when}_seg.dcm", enforce_file_format=True)
                    written.append(f"{when}_seg.dcm")
                sr.save_as(tmp / f"{when}_sr.dcm", enforce_file_format=True)
                written.append(f"{when}_sr.dcm")
            summary["dicom"] = written
        else:
            summary["dicom"] = "not written: both studies must be DICOM series for a SEG/SR that references them"
        (tmp / "followup.json").write_text(json.dumps({**summary, "tracks": table_rows(tracks)}, indent=2))
    return FollowUp(tracks, lp, lc, summary)
