"""Batch de-identification of a folder tree: parallel workers, a progress bar, resume, and a CSV report.

Layout written under OUTPUT_DIR::

    <pseudo patient id>/<study uid>/<series uid>/<sop instance uid>.dcm   (all pseudonyms; no input names leak)
    deid_report.csv        one row per input file: status, reason, action counts, pixel-data hash, and (with
                           --redact-pixels) the redaction record: boxes, keyed hashes of the words read, method
    .medsight-deid.json    run settings and the key *fingerprint* (never the key), checked when resuming

The parent appends report rows in batches, each after one ``syncfs`` has made that batch's files durable; a
killed run started again with the same key and options skips every file already in the report (errors are
retried) and redoes at most one batch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from tqdm import tqdm

from medsight.deid.apply import DeidOptions, deidentify_dataset
from medsight.deid.fast import Unsupported, deidentify_bytes
from medsight.deid.pixels import burned_in_reason
from medsight.deid.pseudonym import Pseudonymizer
from medsight.deid.redact import RedactOptions, redact_dataset
from medsight.deid.regions import DEFAULT_REGIONS, load_regions
from medsight.deid.schedule import largest_first, pool_context
from medsight.deid.words import phi_terms
from medsight.errors import ConfigError, DatasetError, InputNotFoundError
from medsight.files import atomic_write_text

log = logging.getLogger(__name__)

REPORT_NAME = "deid_report.csv"
STATE_NAME = ".medsight-deid.json"
REPORT_FIELDS = ["input", "output", "status", "reason", "actions", "pixel_sha256", "pixels"]
DONE_STATUSES = {"written", "flagged", "skipped"}


@dataclass
class RunOptions:
    """Options of one run; all of them are recorded in the state file and must match on resume."""

    shift_dates: bool = False
    write_flagged: bool = False
    keep_safe_private: bool = True
    redact_pixels: bool = False  # OCR + redact + verify flagged files instead of holding them back
    min_text_chars: int = 3  # verification: no word of this many letters/digits may remain readable
    text_regions: str = ""  # a user's table of known text regions (added to the built-in one)
    regions_only: bool = False  # blank only known regions (OCR still verifies)

    def redact_options(self) -> RedactOptions:
        """The pixel redaction settings these run options stand for (the region table is read here)."""
        regions = DEFAULT_REGIONS + (load_regions(self.text_regions) if self.text_regions else ())
        return RedactOptions(min_chars=self.min_text_chars, use_ocr=not self.regions_only, regions=regions)


@dataclass
class RunSummary:
    """What a run did: counts by status and where its report is."""

    output_dir: Path
    report: Path
    counts: Counter = field(default_factory=Counter)
    resumed_skipped: int = 0

    @property
    def n_files(self) -> int:
        return sum(self.counts.values())


def find_files(input_dir: Path) -> list[Path]:
    """Every regular, non-hidden file under ``input_dir``, sorted (DICOM files often have no extension)."""
    if not input_dir.is_dir():
        raise InputNotFoundError("input folder not found", input_dir)
    files = sorted(p for p in input_dir.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(input_dir).parts))
    if not files:
        raise InputNotFoundError("input folder holds no files", input_dir)
    return files


# --- worker side -------------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(pseudo: Pseudonymizer, options: RunOptions, input_dir: str, output_dir: str) -> None:
    _WORKER.update(pseudo=pseudo, options=options, input_dir=Path(input_dir), output_dir=Path(output_dir),
                   redact=options.redact_options() if options.redact_pixels else None)


def _init_pool_worker(*args) -> None:
    _init_worker(*args)
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # value warnings from every worker would flood stderr


def _is_dicom(path: Path) -> bool:
    """A DICOM preamble, or a header that parses as DICOM (old files without one)."""
    from pydicom.misc import is_dicom

    return is_dicom(path) or _read(path) is not None


def _read(path: Path) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    try:  # files without a preamble/meta header (old ACR-NEMA style) are still DICOM if they parse
        ds = pydicom.dcmread(path, force=True)
    except Exception:
        return None
    return ds if "SOPClassUID" in ds or "SOPInstanceUID" in ds else None


def _ensure_meta(ds: pydicom.Dataset) -> None:
    """Give the output a complete File Meta header, so that every reader accepts it."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, _little = getattr(ds, "original_encoding", (True, True))
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


_MADE_DIRS: set[Path] = set()


def _atomic_write(target: Path, write) -> None:
    """Write through a temporary file and rename: a killed run never leaves a half-written file.

    No fsync per file (it cost more than the de-identification itself): the parent makes a whole batch durable
    with one ``syncfs`` before it records the batch in the report (see ``_Checkpoint``).
    """
    if target.parent not in _MADE_DIRS:
        target.parent.mkdir(parents=True, exist_ok=True)
        _MADE_DIRS.add(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_chunks(path: Path, chunks) -> None:
    with open(path, "wb") as f:
        f.writelines(chunks)


def _write(ds: pydicom.Dataset, target: Path) -> None:
    _ensure_meta(ds)
    ds.preamble = b"\x00" * 128  # a preamble may hold anything (a TIFF header, text): never copy it

    def save(tmp: Path) -> None:
        try:
            ds.save_as(tmp, enforce_file_format=True)
        except (TypeError, ValueError):
            # raw elements whose encoding disagrees with the declared transfer syntax: decode them all, retry
            ds.walk(lambda _d, _e: None)
            ds.save_as(tmp, enforce_file_format=True)

    _atomic_write(target, save)


def _output_path(ds: pydicom.Dataset, rel: str, pseudo: Pseudonymizer) -> Path:
    parts = [str(ds.get("PatientID", "") or "") or "NOPATIENT",
             str(ds.get("StudyInstanceUID", "") or "") or "nostudy",
             str(ds.get("SeriesInstanceUID", "") or "") or "noseries"]
    name = str(ds.get("SOPInstanceUID", "") or "") or pseudo.uid("file:" + rel)
    return Path(*parts) / f"{name}.dcm"


def process_file(path_str: str) -> dict:
    """De-identify one file (in a worker); return its report row. Never raises for a bad input file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's per-value warnings (odd VRs in old files) are not actionable
        return _process_file(path_str)


def _process_file(path_str: str) -> dict:
    path = Path(path_str)
    pseudo: Pseudonymizer = _WORKER["pseudo"]
    options: RunOptions = _WORKER["options"]
    deid_options = DeidOptions(shift_dates=options.shift_dates, keep_safe_private=options.keep_safe_private)
    rel = path.relative_to(_WORKER["input_dir"]).as_posix()
    row = {"input": rel, "output": "", "status": "", "reason": "", "actions": "", "pixel_sha256": "", "pixels": ""}
    try:
        data = path.read_bytes()
        phi: frozenset[str] = frozenset()
        try:
            out_bytes, summary, reason, top, pixel_sha = deidentify_bytes(data, pseudo, deid_options)
            out_rel = _path_from(top, rel, pseudo)
            writer = None
            if reason and _WORKER.get("redact") is not None:  # the header's own PHI, to find it in the pixels
                phi = phi_terms(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True))
        except Unsupported:  # the general path: pydicom objects
            ds = _read(path)
            if ds is None:
                row.update(status="skipped", reason="not a DICOM file")
                return row
            reason = burned_in_reason(ds)
            if reason and _WORKER.get("redact") is not None:
                phi = phi_terms(ds)
            summary = deidentify_dataset(ds, pseudo, deid_options)
            pixel_sha = hashlib.sha256(ds.get_item("PixelData").value or b"").hexdigest() if "PixelData" in ds else ""
            out_rel = _output_path(ds, rel, pseudo)
            out_bytes, writer = None, ds
        row.update(actions=summary.short(), pixel_sha256=pixel_sha)
        if reason and _WORKER.get("redact") is not None:
            ds = writer if writer is not None else pydicom.dcmread(io.BytesIO(b"".join(out_bytes)))
            result = redact_dataset(ds, _WORKER["redact"], pseudo.text_hash, phi)
            row["pixels"] = result.to_json()
            if not result.clean:
                row.update(status="flagged", reason=f"not written: {result.reason}; it may show burned-in text "
                                                    f"({reason})")
                return row
            writer, reason = ds, ""
            row.update(pixel_sha256=hashlib.sha256(ds.PixelData).hexdigest(),
                       reason=f"burned-in text redacted and verified; pixels rewritten as {result.transfer_syntax}")
        if reason and not options.write_flagged:
            row.update(status="flagged", reason=f"not written: possible burned-in text ({reason})")
            return row
        target = _WORKER["output_dir"] / out_rel
        if writer is None:
            _atomic_write(target, lambda tmp: _write_chunks(tmp, out_bytes))
        else:
            _write(writer, target)
        row.update(output=out_rel.as_posix(), status="written",
                   reason=f"written although flagged: {reason}" if reason else row["reason"])
    except Exception as err:  # one broken file must not stop a batch of thousands
        row.update(status="error", reason=f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")
    return row


def _path_from(top: dict[int, str], rel: str, pseudo: Pseudonymizer) -> Path:
    parts = [top.get(0x00100020) or "NOPATIENT", top.get(0x0020000D) or "nostudy", top.get(0x0020000E) or "noseries"]
    return Path(*parts) / f"{top.get(0x00080018) or pseudo.uid('file:' + rel)}.dcm"


# --- parent side -------------------------------------------------------------------------------------------------
def _check_redaction(options: RunOptions) -> None:
    """Fail before any file is read: tesseract missing, a bad region table, contradictory options."""
    from medsight.deid.ocr import tesseract_version

    if options.write_flagged:
        raise ConfigError("--allow-burned-in and --redact-pixels contradict each other: with --redact-pixels a "
                          "file whose text cannot be removed is held back; choose one")
    if options.min_text_chars < 1:
        raise ConfigError(f"--min-text-chars must be >= 1 (got {options.min_text_chars})")
    redact = options.redact_options()
    if redact.mode == "full-frame":  # only the older method runs the tesseract program (pytesseract: +0.5 s)
        tesseract_version()
    from medsight.deid.tess import engine

    # tesserocr and the language data load here (a one-line error when missing), once: forked workers inherit
    # the loaded model instead of each loading its own
    engine(redact.ocr.lang)


def _check_state(output_dir: Path, pseudo: Pseudonymizer, options: RunOptions) -> None:
    state_path = output_dir / STATE_NAME
    state = {"key_fingerprint": pseudo.fingerprint, "options": asdict(options), "profile": "PS3.15 E.1-1 Basic"}
    if state_path.exists():
        old = json.loads(state_path.read_text())
        if old.get("key_fingerprint") != state["key_fingerprint"]:
            raise ConfigError(f"{output_dir} holds a run made with a different key; pass the same --key-file to "
                              "resume, or choose an empty output folder")
        if old.get("options") != state["options"]:
            raise ConfigError(f"{output_dir} holds a run made with other options ({old.get('options')}); "
                              "use the same options to resume, or choose an empty output folder")
    else:
        atomic_write_text(state_path, json.dumps(state, indent=2))


def _syncfs(path: Path) -> None:
    """Flush everything written on the file system holding ``path`` (one call for a whole batch of files)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


class _Checkpoint:
    """Buffer report rows; every ``every`` rows (and at the end) make the files durable, then append the rows.

    So a row in the report always names a file that is safely on disk: a crash loses at most one batch of
    progress, which the next run redoes (outputs are deterministic under the same key).
    """

    def __init__(self, fh, writer: csv.DictWriter, output_dir: Path, every: int = 500) -> None:
        self.fh, self.writer, self.output_dir, self.every = fh, writer, output_dir, every
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        _syncfs(self.output_dir)
        self.writer.writerows(self.rows)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.rows.clear()


def _trim_partial_row(report: Path) -> None:
    """Cut a row a killed run left half-written (no line end), so a resumed run appends whole rows only."""
    if not report.exists():
        return
    with open(report, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            step = min(keep, 1 << 16)
            f.seek(keep - step)
            chunk = f.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = keep - step + cut + 1
                break
            keep -= step
        if keep != size:
            log.warning("%s: dropped a half-written last row (%d bytes) left by an interrupted run", report,
                        size - keep)
            f.truncate(keep)
            os.fsync(f.fileno())


def _done_inputs(report: Path) -> set[str]:
    _trim_partial_row(report)
    if not report.exists():
        return set()
    with open(report, newline="") as f:
        return {r["input"] for r in csv.DictReader(f) if r.get("status") in DONE_STATUSES}


def deidentify_folder(input_dir: str | Path, output_dir: str | Path, pseudo: Pseudonymizer,
                      options: RunOptions | None = None, workers: int | None = None,
                      quiet: bool = False) -> RunSummary:
    """De-identify every DICOM file under ``input_dir`` into ``output_dir`` (see the module docstring)."""
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    options = options or RunOptions()
    if options.redact_pixels:
        _check_redaction(options)
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise ConfigError(f"output folder {output_dir} must not be inside the input folder {input_dir}")
    files = find_files(input_dir)
    if not any(_is_dicom(p) for p in files):  # stops at the first DICOM file: one short read in a real folder
        raise DatasetError(f"none of its {len(files)} file(s) is DICOM; point at the folder that holds the DICOM "
                           "files", input_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _check_state(output_dir, pseudo, options)
    report = output_dir / REPORT_NAME
    done = _done_inputs(report)
    todo = [p for p in files if p.relative_to(input_dir).as_posix() not in done]
    if options.redact_pixels and (workers or os.cpu_count() or 1) > 1:
        todo = largest_first(todo)
    summary = RunSummary(output_dir=output_dir, report=report, resumed_skipped=len(files) - len(todo))
    if summary.resumed_skipped:
        log.info("resuming: %d of %d files already done", summary.resumed_skipped, len(files))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    new_report = not report.exists() or report.stat().st_size == 0
    with open(report, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_FIELDS)
        if new_report:
            writer.writeheader()
        checkpoint = _Checkpoint(fh, writer, output_dir)
        args = (pseudo, options, str(input_dir), str(output_dir))
        pool, bar = None, None
        try:
            if workers == 1:
                _init_worker(*args)
                rows = map(process_file, map(str, todo))
            else:
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(),
                                           initializer=_init_pool_worker, initargs=args)
                # map submits every file now, which forks the workers: before tqdm starts its monitor thread
                rows = pool.map(process_file, map(str, todo), chunksize=max(1, min(64, len(todo) // (workers * 8))))
            bar = tqdm(total=len(todo), unit="file", desc="de-identifying", disable=quiet, leave=False)
            for row in rows:
                checkpoint.add(row)
                summary.counts[row["status"]] += 1
                if row["status"] in ("flagged", "error"):
                    log.warning("%s: %s: %s", row["input"], row["status"], row["reason"])
                bar.update()
            checkpoint.flush()
        finally:
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return summary
