"""A small labelled CT set from the ONE real head CT of invesalius-examples, for the "predict" benchmark.

Every case is a variant of the same scan (Cranium.inv3, 256 x 256 x 108 at 0.957 x 0.957 x 1.5 mm): a 216 x 216 x 96
crop (times ``--scale``) at a different offset, left-right flipped in every other case, with Gaussian noise
(10-40 HU) added to the image. Labels are thresholds of the noise-free scan (lightly smoothed), not expert
labels: 1 = soft tissue (-200..300 HU), 2 = bone (> 300 HU), the same thresholds as the registration benchmark.
What this measures is inference speed at a real CT size and the Dice effect of test-time mirroring with a model
trained by ``medsight train``; it says nothing about generalisation across patients.

Writes ``OUT/train`` (nnU-Net layout, the cases ``medsight train`` sees) and ``OUT/test`` (variants never trained on
or validated on, with their own crops and noise), each with dataset.json, imagesTr/ and labelsTr/.

Run: python benchmarks/make_ct_set.py --out /tmp/ctset [--train 10 --test 3 --scale 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cranium import read_cranium  # noqa: E402

from medsight.image import Geometry, Image  # noqa: E402
from medsight.io.nifti import write_nifti  # noqa: E402

SHAPE = (216, 216, 96)  # x, y, z: the CT case size


def variants(n: int, seed: int, room: tuple[int, ...]) -> list[dict]:
    """Crop offsets (up to ``room`` voxels per axis), flip and noise level of ``n`` cases (reproducible)."""
    rng = np.random.default_rng(seed)
    return [{"offset": [int(rng.integers(0, r + 1)) for r in room],
             "flip_x": bool(i % 2), "noise_hu": float(rng.uniform(10, 40)), "seed": int(rng.integers(1 << 31))}
            for i in range(n)]


def write_set(folder: Path, prefix: str, vol: np.ndarray, labels: np.ndarray, spacing: np.ndarray,
              specs: list[dict], shape: tuple[int, ...]) -> None:
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    geometry = Geometry(tuple(float(s) for s in spacing), (0.0, 0.0, 0.0), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)))
    for i, spec in enumerate(specs):
        ox, oy, oz = spec["offset"]
        crop = (slice(ox, ox + shape[0]), slice(oy, oy + shape[1]), slice(oz, oz + shape[2]))
        img, lab = vol[crop], labels[crop]
        if spec["flip_x"]:
            img, lab = img[::-1], lab[::-1]
        noisy = img + np.random.default_rng(spec["seed"]).normal(0, spec["noise_hu"], img.shape).astype(np.float32)
        cid = f"{prefix}_{i:03d}"
        write_nifti(Image(np.ascontiguousarray(np.round(noisy)), geometry), folder / "imagesTr" / f"{cid}_0000.nii.gz",
                    dtype=np.int16, sidecar=False)
        write_nifti(Image(np.ascontiguousarray(lab), geometry), folder / "labelsTr" / f"{cid}.nii.gz", dtype=np.uint8,
                    sidecar=False)
    meta = {"name": f"InvesaliusHeadCT-{prefix}",
            "description": "Variants (crops, left-right flips, added noise) of ONE real head CT (Debian "
                           "invesalius-examples, Cranium.inv3); labels are HU thresholds, not expert labels.",
            "licence": "GPL-2 (invesalius-examples)", "tensorImageSize": "3D", "channel_names": {"0": "CT"},
            "labels": {"background": 0, "soft_tissue": 1, "bone": 2}, "numTraining": len(specs),
            "file_ending": ".nii.gz", "variants": specs}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=10)
    ap.add_argument("--test", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="resample the scan by this factor first (0.5: 108 x 108 x 48 cases at 1.9 x 1.9 x 3 mm)")
    args = ap.parse_args()
    raw = read_cranium()
    if raw is None:
        sys.exit("invesalius-examples is not installed (apt-get install invesalius-examples)")
    vol, spacing = raw
    if args.scale != 1.0:
        vol = ndimage.zoom(ndimage.gaussian_filter(vol, 0.4 / args.scale), args.scale, order=1)
        spacing = spacing / args.scale
    shape = tuple(int(round(s * args.scale)) for s in SHAPE)
    room = tuple(v - s for v, s in zip(vol.shape, shape))
    smooth = ndimage.gaussian_filter(vol, 0.5)
    labels = np.where(smooth > 300, 2, np.where(smooth > -200, 1, 0)).astype(np.uint8)
    write_set(args.out / "train", "ct", vol, labels, spacing, variants(args.train, 0, room), shape)
    write_set(args.out / "test", "cttest", vol, labels, spacing, variants(args.test, 1, room), shape)
    print("wrote", args.out, "label shares:", np.bincount(labels.ravel(), minlength=3) / labels.size)


if __name__ == "__main__":
    main()
