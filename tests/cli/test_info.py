"""``medsight info``: JSON and table output on real and built DICOM; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from medsight.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from dicom_factory import write_series  # noqa: E402

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _run(capsys, *args: str) -> tuple[str, str]:
    main(list(args))
    out = capsys.readouterr()
    return out.out, out.err


def test_info_json_on_real_ct(capsys, dicom_test_file) -> None:
    path = dicom_test_file("CT_small.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out, _ = _run(capsys, "info", "--json", str(path))
    report = json.loads(out)
    image = report["image"]
    assert image["shape"] == [128, 128, 1] and image["orientation"] == "LPS"
    assert image["spacing_mm"][:2] == [float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])]
    assert image["origin_mm_lps"] == pytest.approx([float(v) for v in ds.ImagePositionPatient], abs=1e-4)
    assert image["provenance"]["modality"] == "CT" and image["provenance"]["scanner_model"] == "RHAPSODE"
    assert [s["series_uid"] for s in report["series"]] == [ds.SeriesInstanceUID]


def test_info_lists_every_series_and_reads_the_one_asked_for(tmp_path: Path, capsys) -> None:
    a, b = "1.2.826.0.1.3680043.8.498.30", "1.2.826.0.1.3680043.8.498.31"
    write_series(tmp_path, [(0, 0, z) for z in (0, 2)], AXIAL, series_uid=a, prefix="a")
    write_series(tmp_path, [(0, 0, z) for z in (0, 1.5, 3)], AXIAL, series_uid=b, prefix="b")
    out, _ = _run(capsys, "info", "--json", str(tmp_path))
    report = json.loads(out)
    assert report["image"] is None
    assert {s["series_uid"]: s["shape"] for s in report["series"]} == {a: [6, 8, 2], b: [6, 8, 3]}
    out, _ = _run(capsys, "info", str(tmp_path))
    assert "--series UID" in out and "value range" not in out  # listed, none read
    out, _ = _run(capsys, "info", "--json", "--series", b, str(tmp_path))
    image = json.loads(out)["image"]
    assert image["shape"] == [6, 8, 3] and image["spacing_mm"] == [0.6, 0.7, 1.5]
    assert image["provenance"]["series_uid"] == b


def test_info_table_for_a_png(tmp_path: Path, capsys) -> None:
    from PIL import Image as PILImage

    PILImage.new("L", (5, 3), 7).save(tmp_path / "x.png")
    out, _ = _run(capsys, "info", str(tmp_path / "x.png"))
    assert "5 x 3" in out and "png" in out


@pytest.mark.parametrize("content, expected", [
    (b"\x00" * 200, "not a DICOM file"),
    (None, "no such file or folder"),
])
def test_info_on_bad_input_exits_2_with_one_line(tmp_path: Path, content: bytes | None, expected: str) -> None:
    bad = tmp_path / "in" / "bad.dcm"
    bad.parent.mkdir()
    if content is not None:
        bad.write_bytes(content)
    work = tmp_path / "cwd"
    work.mkdir()
    before = sorted(tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "medsight.cli.main", "info", str(bad)], cwd=work,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("medsight: error: ") and "bad.dcm" in lines[0] and expected in lines[0]
    assert proc.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere


def test_info_on_mixed_folder_asks_for_series_when_reading(tmp_path: Path, capsys) -> None:
    write_series(tmp_path, [(0, 0, z) for z in (0, 2)], AXIAL, prefix="a")
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--series", "1.2.3.4", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no series 1.2.3.4" in err
