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
@click.option("-j", "--workers", type=int, default=None, help="Worker processes (default: all CPU cores).")
@click.pass_context
@audited("deid.run", inputs=("input_dir",), outputs=("output_dir",))
def deid(ctx: click.Context, input_dir: Path, output_dir: Path, key_file: Path | None, keep_dates_shifted: bool,
         allow_burned_in: bool, drop_safe_private: bool, workers: int | None) -> None:
    """De-identify every DICOM file under INPUT_DIR into OUTPUT_DIR.

    Applies the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile recursively (sequences
    included), removes private tags, replaces UIDs and PatientID with keyed HMAC pseudonyms, removes dates (or
    shifts them with --keep-dates-shifted), and sets PatientIdentityRemoved. Pixel data is left untouched;
    files that may show burned-in text are held back unless --allow-burned-in. Writes
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
    options = RunOptions(shift_dates=keep_dates_shifted, write_flagged=allow_burned_in,
                         keep_safe_private=not drop_safe_private)
    summary = deidentify_folder(input_dir, output_dir, pseudo, options, workers=workers, quiet=quiet)
    current_event().note(counts=dict(summary.counts), key_fingerprint=pseudo.fingerprint)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "nothing new"
    resumed = f" ({summary.resumed_skipped} already done)" if summary.resumed_skipped else ""
    click.echo(f"de-identified {summary.n_files} files{resumed}: {counts}")
    click.echo(f"report: {summary.report}")

