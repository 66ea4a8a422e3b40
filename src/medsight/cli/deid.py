"""``medsight deid INPUT_DIR OUTPUT_DIR``: de-identify a folder of DICOM files (PS3.15 Basic Profile)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from medsight.cli.audited import audited, current_event

log = logging.getLogger(__name__)


@click.command()
@click.argument("input_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--key-file", type=click.Path(path_type=Path),
              help="Secret key (>= 16 bytes) for the keyed pseudonyms. Same key, same UIDs/IDs across runs. "
                   "Without it a random key is used and links to other runs are lost. Create one with "
                   "`head -c 32 /dev/urandom > deid.key` and keep it away from the output.")
@click.option("--keep-dates-shifted", is_flag=True,
              help="Shift every date by a keyed per-patient offset (intervals kept) instead of removing dates.")
@click.option("--allow-burned-in", is_flag=True,
              help="Also write files flagged as possibly showing burned-in text (the report still names them).")
@click.option("--drop-safe-private", is_flag=True,
              help="Remove even the private attributes on the PS3.15 safe list (diffusion b-values...).")
@click.option("--redact-pixels", is_flag=True,
              help="For files that may show burned-in text: blank known text regions, find text and read it there "
                   "(Tesseract), fill identifiers (header values, names, dates, IDs, unknown words) and keep "
                   "annotations (units, device settings, view labels), read again, and write the file "
                   "(BurnedInAnnotation NO, pixels as Explicit VR Little Endian) only if no identifier of "
                   "--min-text-chars is still read; else hold it back.")
@click.option("--min-text-chars", type=int, default=3, show_default=True,
              help="Verification rule for --redact-pixels: a file is held back while OCR still reads a word with "
                   "this many letters/digits (at confidence >= 60).")
@click.option("--text-regions", type=click.Path(path_type=Path), default=None,
              help="JSON or CSV table of known text regions per manufacturer/model, blanked before OCR (added to "
                   "the built-in table; format in docs/privacy.md).")
@click.option("--regions-only", is_flag=True,
              help="With --redact-pixels: blank only the known regions (no OCR-driven filling); OCR still verifies.")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default: all CPU cores).")
@click.pass_context
@audited("deid.run", inputs=("input_dir",), outputs=("output_dir",))
def deid(ctx: click.Context, input_dir: Path, output_dir: Path, key_file: Path | None, keep_dates_shifted: bool,
         allow_burned_in: bool, drop_safe_private: bool, redact_pixels: bool, min_text_chars: int,
         text_regions: Path | None, regions_only: bool, workers: int | None) -> None:
    """De-identify every DICOM file under INPUT_DIR into OUTPUT_DIR.

    Applies the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile recursively (sequences
    included), removes private tags, replaces UIDs and PatientID with keyed HMAC pseudonyms, removes dates (or
    shifts them with --keep-dates-shifted), and sets PatientIdentityRemoved. Pixel data is left untouched;
    files that may show burned-in text are held back unless --allow-burned-in, or, with --redact-pixels, written
    once their text is redacted and OCR verifies that none is left. Writes
    OUTPUT_DIR/deid_report.csv (one row per file); run again with the same key to resume.
    """
    from medsight.deid.pseudonym import Pseudonymizer
    from medsight.deid.run import RunOptions, deidentify_folder

    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    if key_file is not None:
        pseudo = Pseudonymizer.from_file(key_file)
    else:
        log.warning("no --key-file: using a random key; pseudonyms will not match any other run")
        pseudo = Pseudonymizer.random()
    if (text_regions is not None or regions_only) and not redact_pixels:
        raise click.UsageError("--text-regions and --regions-only need --redact-pixels")
    options = RunOptions(shift_dates=keep_dates_shifted, write_flagged=allow_burned_in,
                         keep_safe_private=not drop_safe_private, redact_pixels=redact_pixels,
                         min_text_chars=min_text_chars, text_regions=str(text_regions.resolve()) if text_regions else "",
                         regions_only=regions_only)
    summary = deidentify_folder(input_dir, output_dir, pseudo, options, workers=workers, quiet=quiet)
    current_event().note(counts=dict(summary.counts), key_fingerprint=pseudo.fingerprint)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "nothing new"
    resumed = f" ({summary.resumed_skipped} already done)" if summary.resumed_skipped else ""
    click.echo(f"de-identified {summary.n_files} files{resumed}: {counts}")
    click.echo(f"report: {summary.report}")

