"""Start-up and scheduling of `medsight deid --redact-pixels` (issue 30: >= 1 file/s on 2 cores, whole command).

Measured on the 16-file benchmark: importing pytesseract (it imports pandas) cost ~0.5 s before the first file,
each worker loaded its own Tesseract model, and a 215 KB JPEG Lossless file (786 KB of pixels, ~1.9 CPU-s) was
scheduled last by file size and ran alone at the end. These tests hold the fixes: no pytesseract/pandas/torch in
the command's process, forked workers read with the model the parent loaded (same words as a fresh model), and
files ordered by their decoded pixel bytes.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from medsight.deid import tess
from medsight.deid.run import RunOptions, _check_redaction
from medsight.deid.schedule import largest_first, pixel_bytes, pool_context

HEAVY = ("pytesseract", "pandas", "torch", "monai", "skimage", "SimpleITK", "matplotlib")

_PROBE = """
import json, sys
from medsight.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _image_file(path: Path, rows: int, cols: int, syntax=ExplicitVRLittleEndian) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.repeat(np.arange(rows, dtype=np.uint16) // 32, cols).tobytes()  # bands: RLE shrinks them
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_compressed_file_is_ranked_by_its_decoded_pixels(tmp_path):
    # 256 x 256 x 2 bytes = 131072 decoded bytes in a few KB of RLE; 64 x 64 x 2 = 8192 bytes stored plain
    rle = _image_file(tmp_path / "b_rle.dcm", 256, 256, RLELossless)
    plain = _image_file(tmp_path / "a_plain.dcm", 64, 64)
    assert rle.stat().st_size < plain.stat().st_size  # by file size the large image would go last
    assert pixel_bytes(rle) == 256 * 256 * 2
    assert pixel_bytes(plain) == plain.stat().st_size  # uncompressed: the file size, no header parsed
    junk = tmp_path / "c_junk.dcm"
    junk.write_bytes(b"1.2.840.10008.1.2.4.70" + b"\x00" * 50_000)  # names JPEG but has no header: its size
    assert pixel_bytes(junk) == 50_022
    assert [p.name for p in largest_first([plain, junk, rle])] == ["b_rle.dcm", "c_junk.dcm", "a_plain.dcm"]


def test_real_jpeg_lossless_file_ranks_by_its_decoded_size(dicom_test_file):
    path = dicom_test_file("JPGLosslessP14SV1_1s_1f_8b.dcm")  # 1024 x 768, 8 bits, 1 sample, 1 frame
    assert path.stat().st_size < 300_000
    assert pixel_bytes(path) == 1024 * 768


def _child_reads(img: np.ndarray) -> tuple[bool, list]:
    inherited = "eng" in tess._ENGINES  # noqa: SLF001 - the point of the test: loaded before the fork
    return inherited, tess.engine("eng").words(img)


def test_forked_workers_read_with_the_parents_model_as_a_fresh_one_does(need_tool, monkeypatch):
    need_tool("tesseract")
    from PIL import Image, ImageDraw, ImageFont

    monkeypatch.setattr(tess, "_ENGINES", {})
    _check_redaction(RunOptions(redact_pixels=True))  # what the CLI runs before it starts the workers
    assert "eng" in tess._ENGINES  # noqa: SLF001
    page = Image.new("L", (420, 60), 255)
    ImageDraw.Draw(page).text((10, 12), "DOE JOHN 12/03/1960 L12-5", fill=0, font=ImageFont.load_default(size=24))
    img = np.asarray(page)
    fresh = tess.Engine("eng").words(img)  # the reference: a model loaded on its own, as workers did before
    assert any(w.text == "DOE" for w in fresh)
    with ProcessPoolExecutor(2, mp_context=pool_context()) as pool:
        results = list(pool.map(_child_reads, [img, img]))
    for inherited, words in results:
        assert inherited is (sys.platform.startswith("linux"))
        assert words == fresh


def test_redact_pixels_command_imports_no_pytesseract_pandas_or_torch(tmp_path, need_tool, key_file,
                                                                       dicom_test_file):
    need_tool("tesseract")
    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"  # so that the file goes through the OCR redaction
    ds.save_as(src / "ct.dcm")
    out = tmp_path / "out"
    env = {**os.environ, "MEDSIGHT_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), "-q", "deid", str(src), str(out),
                          "--key-file", str(key_file), "--redact-pixels", "-j", "2"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
    with open(out / "deid_report.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "written" and row["reason"].startswith("burned-in text redacted and verified")
    assert "tesserocr" in json.loads(row["pixels"])["method"]


_FORKS: list[list[str]] = []
_WATCH: list[bool] = []


def _note_threads_at_fork() -> None:
    if _WATCH:
        import threading

        _FORKS.append(sorted(t.name for t in threading.enumerate()))


os.register_at_fork(before=_note_threads_at_fork)


def test_workers_are_forked_before_any_thread_of_the_run_starts(tmp_path, key_file, dicom_test_file):
    # a thread alive at fork (tqdm's monitor did) may hold a lock the child then waits on forever; 3.12+ warns
    import threading

    from medsight.deid.pseudonym import Pseudonymizer
    from medsight.deid.run import deidentify_folder

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        (src / name).write_bytes(dicom_test_file("CT_small.dcm").read_bytes())
    before = sorted(t.name for t in threading.enumerate())
    _FORKS.clear()
    _WATCH.append(True)
    try:
        summary = deidentify_folder(src, tmp_path / "out", Pseudonymizer.from_file(key_file), RunOptions(),
                                    workers=2, quiet=False)
    finally:
        _WATCH.clear()
    assert summary.counts["written"] == 3
    assert len(_FORKS) == 2 and all(names == before for names in _FORKS)  # two workers, no new thread at fork
