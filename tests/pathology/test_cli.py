"""The pathology commands end to end: info, wsi tile/features, train-mil, predict-mil; errors exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medsight.cli.main import main


def _run(capsys, *args: str) -> tuple[str, str]:  # noqa: ANN001 - pytest fixture
    main(list(args))
    out = capsys.readouterr()
    return out.out, out.err


def test_info_describes_the_real_svs(capsys, real_svs: Path) -> None:  # noqa: ANN001
    out, _ = _run(capsys, "info", "--json", str(real_svs))
    d = json.loads(out)
    assert d["kind"] == "whole-slide image" and d["mpp"] == 0.499 and d["objective_power"] == 20.0
    out, _ = _run(capsys, "info", str(real_svs))
    assert "0.499 um/px (file)" in out and "label, macro, thumbnail" in out


def test_info_and_tile_on_a_dicom_wsi(capsys, dicom_wsi: Path, tmp_path: Path) -> None:  # noqa: ANN001
    d = json.loads(_run(capsys, "info", "--json", str(dicom_wsi))[0])
    assert d["backend"] == "wsidicom" and len(d["levels"]) == 3
    out, _ = _run(capsys, "-q", "wsi", "tile", str(dicom_wsi), "--out", str(tmp_path), "--tile-mpp", "2",
                  "--size", "112")
    m = json.loads((tmp_path / dicom_wsi.name / "tiles.json").read_text())
    assert m["n_tiles"] > 5 and m["slide"]["backend"] == "wsidicom" and m["tiling_hash"][:16] in out


def test_missing_mpp_exits_2_and_given_mpp_is_recorded(capsys, no_mpp_tiff: Path, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as e:
        main(["-q", "wsi", "tile", str(no_mpp_tiff), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no pixel size" in err and "--mpp" in err and len(err.strip().splitlines()) == 1
    _run(capsys, "-q", "wsi", "tile", str(no_mpp_tiff), "--out", str(tmp_path), "--mpp", "0.5", "--size", "128")
    m = json.loads((tmp_path / "nompp" / "tiles.json").read_text())
    assert m["slide"]["mpp"] == 0.5 and m["slide"]["mpp_source"] == "user"


@pytest.mark.slow
def test_tile_features_train_predict(capsys, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from medsight.synthetic.slides import build_slide_set

    made = build_slide_set(tmp_path / "data", n_patients=4, slides_per_patient=2, seed=3, piece=760,
                           progress=False)
    tiles = tmp_path / "tiles"
    monkeypatch.chdir(tmp_path)  # slides named by relative paths, as a user types them
    _run(capsys, "-q", "wsi", "tile", *[str(m.path.relative_to(tmp_path)) for m in made], "--out", "tiles",
         "--tile-mpp", "2", "--size", "64")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # later steps from another working directory still find the slides
    manifest = json.loads((tiles / made[0].slide_id / "tiles.json").read_text())
    assert Path(manifest["slide"]["path"]) == made[0].path.resolve()
    assert manifest["slide"]["relative_path"] == f"../../data/slides/{made[0].slide_id}.tif"
    out, _ = _run(capsys, "-q", "wsi", "features", str(tiles), "--batch", "64")
    assert out.count("(extracted)") == len(made)
    out, _ = _run(capsys, "-q", "wsi", "features", str(tiles))
    assert out.count("(resumed)") == len(made)
    _run(capsys, "-q", "train-mil", str(tmp_path / "data" / "slides.csv"), str(tiles), "--out",
         str(tmp_path / "model"), "--epochs", "5")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["encoder"]["encoder"] == "efficientnet-lite0"
    assert set(config["tiling_hashes"]) == {m.slide_id for m in made}  # every slide had tissue tiles
    _run(capsys, "-q", "predict-mil", str(tmp_path / "model"), str(tiles), "--out", str(tmp_path / "pred"),
         "--top-k", "2")
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    assert len(rows) == len(made) and all(0 <= float(r["probability"]) <= 1 for r in rows)
    s = made[0].slide_id
    gj = json.loads((tmp_path / "pred" / s / "attention.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and gj["features"][0]["properties"]["objectType"] == "annotation"
    assert (tmp_path / "pred" / s / "heatmap.png").stat().st_size > 1000
    tops = sorted((tmp_path / "pred" / s / "top_tiles").glob("*.png"))
    assert len(tops) == 2
    from PIL import Image

    for png in [*tops, tmp_path / "pred" / s / "heatmap.png"]:  # display size, whatever the tile size
        with Image.open(png) as im:
            assert max(im.size) >= 512, (png.name, im.size)
    att = np.load(tmp_path / "pred" / s / "attention.npy")
    assert att.sum() == pytest.approx(1.0, abs=1e-5)
