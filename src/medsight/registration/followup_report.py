"""What a follow-up hands to people and the PACS: lesion_changes.csv, a DICOM SEG + SR per time point whose lesion
tracking identifiers (UID and name) are the same for a matched lesion at both times, and an evidence figure.

The SRs are TID 1500 Measurement Reports built by ``io.dicom_out.build_sr``; each lesion is a volumetric ROI group
that references its segment in that time point's SEG (one segment per lesion). A tracked lesion carries one
Tracking UID, derived from both studies' series UIDs and its track number, in the prior and the current SR: that is
how DICOM says "the same lesion at another time point" (PS3.16 TID 1500, Tracking Identifier / Tracking UID).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import MedsightError
from medsight.image import Image
from medsight.io.dicom_out import Algorithm, Segment, build_seg, build_sr, uid_for
from medsight.registration.followup import Change, Lesions, table_rows

COLUMNS = ("track_id", "prior_lesion_id", "current_lesion_id", "prior_volume_ml", "current_volume_ml",
           "volume_change_ml", "volume_change_percent", "prior_diameter_mm", "current_diameter_mm",
           "diameter_change_mm", "diameter_change_percent", "matched_by", "overlap_voxels", "centroid_distance_mm",
           "status", "prior_centroid_lps_mm", "current_centroid_lps_mm")


def changes_csv(tracks: list[Change]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(table_rows(tracks))
    return buf.getvalue()


def dicom_source(path: str | Path) -> list[Any] | None:
    """The DICOM datasets of a series folder (or file), None when the input is not DICOM."""
    import pydicom

    p = Path(path)
    if p.name.lower().endswith((".nii", ".nii.gz")):
        return None
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # noqa: BLE001 - not DICOM: skip it
            continue
        if "PixelData" in ds:
            out.append(ds)
    return out or None


def tracking_seed(prior_source: Sequence[Any], current_source: Sequence[Any]) -> str:
    return f"follow-up|{prior_source[0].SeriesInstanceUID}|{current_source[0].SeriesInstanceUID}"


def seg_and_sr(source: Sequence[Any], lesions: Lesions, image: Image, tracks: list[Change], when: str, seed: str,
               algorithm: Algorithm) -> tuple[Any, Any]:
    """(SEG, SR) of one time point: each of its lesions a segment and a ROI group with the track's Tracking UID."""
    present = [(t, (t.prior if when == "prior" else t.current)) for t in tracks]
    present = [(t, row) for t, row in present if row is not None]
    if not present:
        sr = build_sr(source, algorithm, f"{seed}|{when}", findings=[])
        return None, sr
    labels = Image(lesions.ids.astype(np.uint16), image.geometry, image.provenance)
    segments = [Segment(int(row["lesion_id"]), f"lesion T{t.track_id}") for t, row in present]
    try:
        seg = build_seg(source, labels, segments, algorithm, f"{seed}|{when}")
    except MedsightError as err:
        raise MedsightError(f"the {when} label map is not on its DICOM series' grid ({err})") from err
    number = {int(row["lesion_id"]): i + 1 for i, (_, row) in enumerate(present)}
    findings = [{"lesion_id": row["lesion_id"], "segment_number": number[int(row["lesion_id"])],
                 "volume_ml": row["volume_ml"], "longest_diameter_mm": row["longest_diameter_mm"],
                 "tracking_uid": uid_for(seed, f"track-{t.track_id}"),
                 "tracking_identifier": f"lesion T{t.track_id} ({t.status})"} for t, row in present]
    sr = build_sr(source, algorithm, f"{seed}|{when}", findings=findings, seg=seg)
    return seg, sr


def evidence_png(prior_on_current: Image, current: Image, carried_ids: np.ndarray, current_ids: np.ndarray,
                 tracks: list[Change], max_rows: int = 6) -> bytes:
    """Both time points on the current grid, one row per track (up to ``max_rows``, largest first): the slice
    through the lesion's centre, its outline at each time, numbered T<track> the same in both columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsight.explain.overlays import display_view

    shown = sorted(tracks, key=lambda t: -max((t.prior or {}).get("volume_ml", 0), (t.current or {}).get("volume_ml", 0)))
    shown = shown[:max_rows]
    geom = current.geometry
    lo, hi = np.percentile(np.asarray(current.array, np.float32), [1, 99.5])
    fig, axes = plt.subplots(max(len(shown), 1), 2, figsize=(7, 3.3 * max(len(shown), 1)), squeeze=False)
    for r, t in enumerate(shown):
        mask_c = current_ids == (t.current or {}).get("lesion_id", -1)
        mask_p = carried_ids == (t.prior or {}).get("lesion_id", -1)
        where = mask_c if mask_c.any() else mask_p
        k = int(round(np.argwhere(where)[:, 2].mean())) if where.any() else current.shape[2] // 2
        for c, (img, mask, name) in enumerate(((prior_on_current, mask_p, "prior (aligned)"),
                                                (current, mask_c, "current"))):
            ax = axes[r, c]
            ax.imshow(display_view(np.asarray(img.array, np.float32)[:, :, k], geom), cmap="gray", vmin=lo, vmax=hi)
            if mask[:, :, k].any():
                view = display_view(mask[:, :, k].astype(float), geom)
                ax.contour(view, levels=[0.5], colors="yellow" if c == 0 else "red", linewidths=1.2)
                yx = np.argwhere(view > 0.5).mean(0)
                ax.text(yx[1] + 4, yx[0] - 4, f"T{t.track_id}", color="yellow", fontsize=11, weight="bold")
            row = t.prior if c == 0 else t.current
            size = f"{row['volume_ml']:.2f} ml, {row['longest_diameter_mm']:.1f} mm" if row else "absent"
            ax.set_title(f"{name}, slice {k}: T{t.track_id} {size}", fontsize=8)
            ax.axis("off")
        axes[r, 1].text(0.02, 0.02, t.status, color="white", transform=axes[r, 1].transAxes, fontsize=10,
                        bbox={"facecolor": "black", "alpha": 0.6})
    fig.suptitle(f"follow-up: {len(tracks)} tracked lesion(s) (unit: lesion), {len(shown)} shown\nprior resampled "
                 "onto the current grid by the registration;\nvolumes/diameters measured in each study's own grid",
                 fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
