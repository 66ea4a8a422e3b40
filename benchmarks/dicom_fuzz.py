"""Fuzzing the DICOM paths: byte flips and truncations of real DICOM files, with planted identifiers.

Shared by the short CI fuzz test (tests/reliability/test_fuzz_dicom.py) and the long run (bench_fuzz.py). Each
case is one mutated file; ``judge`` runs it through the byte-level fast de-identification path (deid/fast.py) and
the pydicom path (deid/apply.py, the way deid/run.py calls them) and reports what happened: the only acceptable
outcomes are "accepted" (an output that holds no planted identifier) or a clean refusal (the fast path's
``Unsupported``, or an exception the folder runner turns into an ``error`` row). Where both paths accept a file,
their outputs must read back as the same dataset.
"""

from __future__ import annotations

import contextlib
import io
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medsight.deid.apply import DeidOptions, deidentify_dataset
from medsight.deid.fast import Unsupported, deidentify_bytes
from medsight.deid.pseudonym import Pseudonymizer
from medsight.deid.output import ensure_meta
from medsight.synthetic.phi_corpus import local_test_files

# planted into every base file; none may survive de-identification in any written byte
PLANTED = {"PatientName": "ZQFUZZ^PLANTED^48213X", "PatientID": "ZQFUZZID77123X",
           "InstitutionName": "ZQFUZZ HOSPITAL 55821X", "ReferringPhysicianName": "ZQFUZZ^REFDOC^66120X",
           "AccessionNumber": "ZQACC90412X"}
PLANTED_BYTES = tuple(v.encode() for v in PLANTED.values())
# explicit and implicit little endian, compressed, multi-frame, big endian (pydicom path only), no pixels
BASE_NAMES = ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "emri_small.dcm", "MR_small_bigendian.dcm",
              "rtplan.dcm", "SC_rgb_rle.dcm", "OBXXXX1A.dcm")
_PIXEL_TAG = {b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"}
KEY = b"fuzzing key, 32 bytes long......"


class Timeout(Exception):
    """A case ran past its time limit (a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``Timeout`` in the main thread after ``seconds`` (SIGALRM; Linux)."""
    def on_alarm(_signum: int, _frame: object) -> None:
        raise Timeout(f"over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def planted_bases(names: tuple[str, ...] = BASE_NAMES) -> dict[str, bytes]:
    """The named shipped files (those present) with the identifiers of ``PLANTED`` written in, as bytes."""
    by_name = {p.name: p for p in local_test_files()}
    bases = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name not in by_name:
                continue
            ds = pydicom.dcmread(by_name[name])
            for keyword, value in PLANTED.items():
                setattr(ds, keyword, value)
            buf = io.BytesIO()
            ds.save_as(buf)
            bases[name] = buf.getvalue()
    return bases


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutation: flip 1-8 bytes (mostly in the header, where the parser's decisions are) or truncate."""
    pixels = min((i for i in (data.find(t) for t in _PIXEL_TAG) if i > 0), default=len(data))
    kind = rng.choice(["flip", "flip", "flip", "truncate"])
    if kind == "truncate":
        cut = int(rng.integers(0, len(data)))
        return f"truncate@{cut}", data[:cut]
    out = bytearray(data)
    spots = []
    for _ in range(int(rng.integers(1, 9))):
        end = pixels if rng.random() < 0.85 else len(data)
        i = int(rng.integers(0, max(end, 1)))
        out[i] ^= int(rng.integers(1, 256))
        spots.append(i)
    return "flip@" + ",".join(map(str, sorted(spots))), bytes(out)


@dataclass
class Outcome:
    """What the two de-identification paths did with one mutated file."""

    fast: str = ""       # written | unsupported | crash:<Type>
    pydicom: str = ""    # written | refused:<Type> | not-dicom
    agree: bool | None = None   # both wrote: same dataset read back
    leaks: list[str] = field(default_factory=list)  # path names whose output still holds a planted identifier
    hang: bool = False

    @property
    def clean(self) -> bool:
        return not self.leaks and not self.hang and not self.fast.startswith("crash") and self.agree is not False


def pydicom_path(data: bytes, pseudo: Pseudonymizer, options: DeidOptions) -> bytes | None:
    """deid/run.py's general path on bytes: read (forced for files without a header), de-identify, write."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "SOPClassUID" not in ds and "SOPInstanceUID" not in ds:
            return None
    deidentify_dataset(ds, pseudo, options)
    ensure_meta(ds)
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (TypeError, ValueError):
        ds.walk(lambda _d, _e: None)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def same_dataset(a: bytes, b: bytes) -> bool:
    """Both outputs read back to the same elements with the same values."""
    da, db = pydicom.dcmread(io.BytesIO(a)), pydicom.dcmread(io.BytesIO(b))
    if sorted(da.keys()) != sorted(db.keys()):
        return False
    for t in db.keys():
        raw_a, raw_b = da.get_item(t), db.get_item(t)
        if raw_a.value == raw_b.value:  # the same bytes (a value neither path can decode is copied as it was)
            continue
        try:
            if da[t].value != db[t].value:
                return False
        except Exception:  # noqa: BLE001 - different bytes that do not even decode
            return False
    return True


def judge(data: bytes, seconds: float = 10.0) -> Outcome:
    """Run one (mutated) file through both paths under a time limit; see ``Outcome``."""
    pseudo, options = Pseudonymizer(KEY), DeidOptions()
    out = Outcome()
    fast_bytes = ref_bytes = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with time_limit(seconds):
                try:
                    chunks = deidentify_bytes(data, pseudo, options)[0]
                    fast_bytes, out.fast = b"".join(chunks), "written"
                except Unsupported:
                    out.fast = "unsupported"
                except Exception as err:  # noqa: BLE001 - a crash is what we are looking for
                    out.fast = f"crash:{type(err).__name__}"
                try:
                    ref_bytes = pydicom_path(data, pseudo, options)
                    out.pydicom = "written" if ref_bytes is not None else "not-dicom"
                except Exception as err:  # noqa: BLE001 - deid/run.py reports these as an error row
                    out.pydicom = f"refused:{type(err).__name__}"
                for name, written in (("fast", fast_bytes), ("pydicom", ref_bytes)):
                    if written is not None and any(p in written for p in PLANTED_BYTES):
                        out.leaks.append(name)
                if fast_bytes is not None and ref_bytes is not None:
                    try:
                        out.agree = same_dataset(fast_bytes, ref_bytes)
                    except Exception:  # noqa: BLE001 - the fast output does not even read back
                        out.agree = False
        except Timeout:
            out.hang = True
    return out


def cases(n: int, seed: int, bases: dict[str, bytes]) -> Iterator[tuple[str, str, bytes]]:
    """``n`` (base name, mutation, bytes) cases, round robin over the bases, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    names = sorted(bases)
    for i in range(n):
        name = names[i % len(names)]
        how, data = mutate(bases[name], rng)
        yield name, how, data


def write_cases(folder: Path, n: int, seed: int, bases: dict[str, bytes]) -> list[Path]:
    """The cases as files ``folder/<i>_<base>`` (for the CLI runs); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, _how, data) in enumerate(cases(n, seed, bases)):
        p = folder / f"{i:05d}_{name}"
        p.write_bytes(data)
        paths.append(p)
    return paths
