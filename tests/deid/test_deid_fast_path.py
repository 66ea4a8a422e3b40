"""The byte-level fast path must give exactly what the pydicom path gives, on every file it accepts."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest

from medsight.deid.apply import DeidOptions, deidentify_dataset
from medsight.synthetic.phi_corpus import local_test_files
from medsight.deid.fast import Unsupported, deidentify_bytes
from medsight.deid.pseudonym import Pseudonymizer
from medsight.deid.output import ensure_meta


def _pydicom_path(path, pseudo, options):
    ds = pydicom.dcmread(path)
    summary = deidentify_dataset(ds, pseudo, options)
    ensure_meta(ds)
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (TypeError, ValueError):
        ds.walk(lambda _d, _e: None)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue())), summary


@pytest.mark.parametrize("shift", [False, True])
def test_fast_path_equals_pydicom_path(corpus, shift):
    pseudo, options = Pseudonymizer(b"equivalence key 32 bytes long..."), DeidOptions(shift_dates=shift)
    files = [str(p) for p in corpus.files] + [str(p) for p in local_test_files()]
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            data = open(path, "rb").read()
            try:
                chunks, summary, _, top, pixel_sha = deidentify_bytes(data, pseudo, options)
            except Unsupported:
                continue
            fast = pydicom.dcmread(io.BytesIO(b"".join(chunks)))
            ref, ref_summary = _pydicom_path(path, pseudo, options)
            assert sorted(fast.keys()) == sorted(ref.keys()), path
            for tag in ref.keys():
                assert fast[tag].value == ref[tag].value, (path, tag)
            assert fast.file_meta.MediaStorageSOPInstanceUID == ref.SOPInstanceUID == top[0x00080018]
            assert dict(summary.counts) == dict(ref_summary.counts), path
            assert fast.preamble == b"\x00" * 128
            compared += 1
    assert compared >= 100  # the fast path covers most files; the rest fall back (big endian, no meta...)


def test_unsupported_inputs_fall_back():
    pseudo, options = Pseudonymizer(b"k" * 32), DeidOptions()
    with pytest.raises(Unsupported):
        deidentify_bytes(b"\x00" * 200, pseudo, options)  # no DICM prefix
    big_endian = [p for p in local_test_files() if p.name == "MR_small_bigendian.dcm"][0]
    with pytest.raises(Unsupported, match="1.2.840.10008.1.2.2"):
        deidentify_bytes(open(big_endian, "rb").read(), pseudo, options)
