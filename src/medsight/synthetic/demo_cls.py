"""Classification demo data: axial slices of the segmentation demo volumes, labelled from their lesion masks.

Each slice is written as a one-slice NIfTI volume, so it keeps its true position in the scanner frame, with its
lesion-mask slice beside it (for the pointing game). Labels, per slice:

* ``lesion``: the slice cuts a conspicuous lesion (contrast-to-noise ratio >= ``MIN_CNR``) over at least
  ``MIN_LESION_MM2`` mm^2. Slices that cut a fainter or smaller lesion, or lie within ``MARGIN_MM`` of one, are
  indeterminate and left out rather than called negative (counted in ``.demo_cls_build.json``), so the label
  says what the pixels show. The demo generator deliberately makes many lesions faint (CNR 0.5-4); a slice
  classifier cannot see those, and calling them negative would train it on label noise.
* ``large_lesion``: the cross-section is at least ``LARGE_LESION_MM2`` mm^2 (a second label for multi-label).

Patients, sites and scanners are carried over, so patient-level splits and the unseen site_C work as for 3D.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medsight.synthetic.demo import BUILD_VERSION, DEFAULT_LESION_PROFILE, LABELS, LESION_SHARE, build_demo_dataset
from medsight.files import atomic_write_text
from medsight.image import Geometry, Image
from medsight.io.nifti import NiftiSliceWriter, read_nifti

log = logging.getLogger(__name__)

VERSION = 4
MIN_LESION_MM2 = 30.0
MIN_CNR = 2.5  # lesions fainter than this (contrast-to-noise) are simulated to be near-invisible
LARGE_LESION_MM2 = 60.0
MARGIN_MM = 6.0
MIN_WM_SHARE = 0.4  # keep slices whose white-matter area is at least this share of the largest slice's
NEGATIVE_STRIDE = 2  # every 2nd lesion-free slice: fewer near-duplicates, faster training
COLUMNS = ("image", "mask", "patient_id", "site", "scanner", "case_id", "slice_index", "lesion", "large_lesion",
           "_lesion_area_mm2", "_lesion_cnr")


def build_demo_cls_dataset(root: Path, n_cases: int | None = None, seed: int = 0, quiet: bool = False,
                           volumes: Path | None = None, lesion_share: float = LESION_SHARE,
                           lesion_profile: str = DEFAULT_LESION_PROFILE, patients: Iterable[str] | None = None) -> Path:
    """Build (or reuse) the slice dataset under ``root``; returns the path of its ``manifest.csv``.

    The volumes are built (or reused: same arguments, same cached folder) by ``build_demo_dataset`` under
    ``volumes`` (default ``root/volumes``); pass the segmentation stage's folder to share its volumes, or a
    larger ``n_cases`` and ``lesion_share`` for more distinct findings (a slice classifier needs many more
    lesions than a 3D segmenter sees in 40 cases). A finished build leaves a stamp, and a second call with the
    same arguments returns at once. ``patients``: only their cases (``build_demo_dataset``), the same slices.
    """
    root = Path(root)
    volumes = build_demo_dataset(Path(volumes) if volumes else root / "volumes", n_cases=n_cases, seed=seed,
                                 quiet=quiet, lesion_share=lesion_share, lesion_profile=lesion_profile,
                                 patients=patients)
    manifest = root / "manifest.csv"
    stamp = root / ".demo_cls_build.json"
    want = {"version": VERSION, "n_cases": n_cases, "seed": seed, "volumes": str(volumes),
            "lesion_share": lesion_share, "volumes_version": BUILD_VERSION}
    if lesion_profile != DEFAULT_LESION_PROFILE:
        want["lesion_profile"] = lesion_profile
    if patients is not None:
        want["patients"] = sorted(set(patients))
    if stamp.is_file() and manifest.is_file():
        try:
            if {k: v for k, v in json.loads(stamp.read_text()).items() if k in want} == want:
                return manifest
        except ValueError:
            pass
    with open(volumes / "manifest.csv", newline="") as f:
        cases = list(csv.DictReader(f))
    rows: list[dict[str, object]] = []
    skipped = 0
    # two threads (one per core): zlib and the file system release the GIL; map keeps the manifest's order
    with ThreadPoolExecutor(2) as pool:
        for case_rows, case_skipped in tqdm(pool.map(lambda case: _slice_case(volumes, case, root), cases),
                                            total=len(cases), desc="demo slices", disable=quiet, unit="case"):
            rows.extend(case_rows)
            skipped += case_skipped
    os.sync()  # the slices were written without per-file fsyncs: flush them all before the stamp says "complete"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(manifest, buf.getvalue())
    atomic_write_text(stamp, json.dumps({**want, "indeterminate_slices_left_out": skipped}, sort_keys=True))
    log.info("demo classification slices: %d (%d with lesion) in %s", len(rows),
             sum(int(r["lesion"]) for r in rows), root)
    return manifest


def _slice_case(volumes: Path, case: dict[str, str], root: Path) -> tuple[list[dict[str, object]], int]:
    image = read_nifti(volumes / case["image"])
    label = read_nifti(volumes / case["label"]).array
    sp = image.geometry.spacing
    pixel_mm2 = float(sp[0] * sp[1])
    wm = (label == LABELS["white_matter"]).sum(axis=(0, 1))
    lesion_area = (label == LABELS["lesion"]).sum(axis=(0, 1)) * pixel_mm2
    lesion_slices = np.flatnonzero(lesion_area > 0)
    margin = int(np.ceil(MARGIN_MM / sp[2]))
    conspicuous = float(case.get("lesion_cnr") or 0.0) >= MIN_CNR
    skipped = 0
    # only levels with plenty of white matter, where the lesions are: otherwise "which level is this slice"
    # would predict the label (lesions sit in white matter) and a network would learn anatomy, not lesions
    keep = np.flatnonzero(wm >= MIN_WM_SHARE * wm.max())
    out: list[dict[str, object]] = []
    writer = NiftiSliceWriter()  # write_nifti's bytes, the header built once per volume (issue 30: demo time)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for n, k in enumerate(keep):
        area = float(lesion_area[k])
        positive = area >= MIN_LESION_MM2 and conspicuous
        near = lesion_slices.size > 0 and np.min(np.abs(lesion_slices - k)) <= margin
        if not positive and near:
            skipped += 1
            continue
        if not positive and n % NEGATIVE_STRIDE:
            continue
        name = f"{case['case_id']}_z{k:03d}"
        origin = image.geometry.index_to_world((0.0, 0.0, float(k)))
        geom = Geometry(sp, tuple(float(v) for v in origin), image.geometry.direction)
        img = Image(image.array[:, :, k:k + 1].copy(), geom, image.provenance.with_step("axial_slice", index=int(k)))
        mask = Image((label[:, :, k:k + 1] == LABELS["lesion"]).astype(np.uint8), geom)
        writer.write(img, root / "images" / f"{name}.nii.gz", durable=False)
        writer.write(mask, root / "masks" / f"{name}.nii.gz", dtype=np.uint8, durable=False)
        out.append({"image": f"images/{name}.nii.gz", "mask": f"masks/{name}.nii.gz",
                    "patient_id": case["patient_id"], "site": case["site"], "scanner": case["scanner"],
                    "case_id": case["case_id"], "slice_index": int(k), "lesion": int(positive),
                    "large_lesion": int(positive and area >= LARGE_LESION_MM2), "_lesion_area_mm2": round(area, 1),
                    "_lesion_cnr": float(case.get("lesion_cnr") or 0.0)})
    return out, skipped


def with_splits(manifest: Path, out: Path, seed: int = 0, external_site: str = "site_C",
                fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Path:
    """Copy of ``manifest`` with a ``split`` column: training-site patients -> train/val/test (stratified by
    whether the patient has a lesion, never splitting a patient), every ``external_site`` row -> test."""
    import pandas as pd

    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    inside = table[table["site"] != external_site]
    per_patient = inside.groupby("patient_id")["lesion"].apply(lambda s: int((s == "1").any()))
    rng = np.random.default_rng([seed, 5])
    split_of: dict[str, str] = {}
    for _, group in per_patient.groupby(per_patient):
        pids = sorted(group.index)
        rng.shuffle(pids)
        n_train = int(round(fractions[0] * len(pids)))
        n_val = int(round(fractions[1] * len(pids)))
        for i, pid in enumerate(pids):
            split_of[pid] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    table["split"] = [split_of.get(p, "test") if s != external_site else "test"
                      for p, s in zip(table["patient_id"], table["site"])]
    atomic_write_text(out, table.to_csv(index=False, lineterminator="\n"))
    return out
