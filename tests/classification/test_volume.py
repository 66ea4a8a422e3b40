"""3D: a volume classifier trains, and predict-cls writes a heatmap volume aligned to the input image."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medsight.classification.predict import predict_images
from medsight.classification.train import TrainConfig, train_classifier
from medsight.image import Geometry, Image
from medsight.io.nifti import read_nifti, write_nifti


def test_volume_heatmap_is_a_nifti_on_the_image_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    geom = Geometry((1.5, 1.2, 2.0), (10.0, -5.0, 3.0), ((-1.0, 0, 0), (0, -1.0, 0), (0, 0, 1.0)))
    rows = []
    for i in range(16):
        a = rng.normal(100, 10, (20, 18, 14)).astype(np.float32)
        if i % 2:
            a[5:11, 6:12, 4:9] += 60
        write_nifti(Image(a, geom), tmp_path / f"v{i}.nii.gz", sidecar=False)
        rows.append({"image": f"v{i}.nii.gz", "patient_id": f"P{i}", "site": "s", "cube": i % 2})
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    torch.set_num_threads(2)
    cfg = TrainConfig(backbone="resnet10-slim", input_size=(16, 16, 16), epochs=2, batch_size=4,
                      cam_layer="net.layer1", val_fraction=0.25)
    res = train_classifier(tmp_path / "m.csv", tmp_path / "model", cfg, quiet=True)
    assert res["epochs"] == 2
    from medsight.classification import load_classifier

    bundle = load_classifier(tmp_path / "model", unpackaged=True)  # the fresh training folder, not a package
    table = predict_images(bundle, [tmp_path / "v1.nii.gz"], tmp_path / "p.csv", quiet=True, evidence=True)
    heat = read_nifti(table["gradcam_array_cube"][0])
    image = read_nifti(tmp_path / "v1.nii.gz")
    assert heat.shape == image.shape
    np.testing.assert_allclose(heat.geometry.affine, image.geometry.affine, atol=1e-5)
    assert Path(table["gradcam_png_cube"][0]).is_file()
    evidence = Path(table["evidence_png_cube"][0])  # three orthogonal views, and an axial montage beside it
    assert evidence.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and evidence.with_name("0000_v1_cube_montage.png").is_file()
    assert set(pd.read_csv(tmp_path / "p.csv").columns) >= {"p_cube", "decision_cube", "threshold_cube"}
