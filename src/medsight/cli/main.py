"""The ``medsight`` command: a lazy group so that ``medsight --help`` starts fast (no torch import).

Each command lives in its own module under ``medsight.cli`` and is imported only when it runs. A
``MedsightError`` raised anywhere below is printed as one line on stderr and the process exits with status 2.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import logging
import os
import sys

import click

from medsight import __version__
from medsight.errors import MedsightError

# command name -> (module, attribute, one-line help shown by `medsight --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("medsight.cli.info", "info", "Describe an image file or DICOM folder: series, geometry, provenance."),
    "demo": ("medsight.cli.demo", "demo", "Build the embedded demo data and run the whole pipeline on it."),
    "evaluate": ("medsight.cli.evaluate", "evaluate", "Segmentation and classification metrics with CIs."),
    "plan": ("medsight.cli.plan", "plan", "Fingerprint a dataset and write its training plan."),
    "train": ("medsight.cli.train", "train", "Train a segmentation model from a plan (resumable)."),
    "predict": ("medsight.cli.predict", "predict", "Segment images with a trained model (sliding window, TTA)."),
    "train-cls": ("medsight.cli.classify", "train_cls", "Train an image classifier from a manifest CSV."),
    "predict-cls": ("medsight.cli.classify", "predict_cls", "Classify images and save Grad-CAM evidence."),
    "deid": ("medsight.cli.deid", "deid", "De-identify DICOM files (PS3.15 Basic Profile)."),
    "models": ("medsight.cli.models", "models", "List, show, verify and promote registered model packages."),
    "export": ("medsight.cli.export", "export", "Export a model package to ONNX (+ preprocessing JSON) for the edge."),
    "audit": ("medsight.cli.audit", "audit", "Inspect and verify the tamper-evident audit log."),
    "validate": ("medsight.cli.validate", "validate", "External validation report (HTML + JSON)."),
    "serve": ("medsight.cli.serve", "serve", "Triage service: DICOM in, SEG/SR out, an authenticated worklist."),
    "users": ("medsight.cli.serve", "users", "Add, rotate, revoke and list users of the triage service."),
    "wsi": ("medsight.cli.wsi", "wsi", "Whole-slide images: tile into a hashed manifest, extract tile features."),
    "train-mil": ("medsight.cli.mil", "train_mil_cmd", "Train a slide-level MIL model on tile features."),
    "predict-mil": ("medsight.cli.mil", "predict_mil_cmd", "Slide predictions with attention heatmaps and GeoJSON."),
    "federated": ("medsight.cli.federated", "federated", "Federated training across sites on Flower (with DP)."),
    "calibrate": ("medsight.cli.calibrate", "calibrate", "Calibrate a classifier package on unseen patients: "
                  "a new version with re-derived thresholds and referral rule."),
    "register": ("medsight.cli.register", "register", "Align one study onto another (rigid/affine/deformable)."),
    "follow-up": ("medsight.cli.followup", "follow_up", "Match lesions across two studies of a patient; report change."),
    "pretrain": ("medsight.cli.pretrain", "pretrain", "Self-supervised pretraining on unlabelled scans -> encoder."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (mod, _, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[cmd_name]
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the table, so that `medsight --help` imports none of them."""
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="medsight")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """medsight: from hospital image formats to validated, calibrated, explainable, traceable model outputs.

    Every command takes --help. Errors caused by input are reported on one line with exit status 2.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("numexpr", "matplotlib", "PIL"):  # third-party chatter at INFO that says nothing to a user
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, turning MedsightError into one line and exit status 2."""
    try:
        cli.main(args=argv, prog_name="medsight", standalone_mode=False)
    except MedsightError as err:
        click.echo(f"medsight: error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("medsight: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        hint = ""
        if isinstance(err, click.UsageError) and err.ctx is not None:
            hint = f" (see '{err.ctx.command_path} --help')"
        click.echo(f"medsight: error: {' '.join(err.format_message().split())}{hint}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except OSError as err:
        if err.errno not in USER_OS_ERRORS:
            raise
        click.echo(f"medsight: error: {os_error_line(err)}", err=True)
        sys.exit(2)


# errno values a user causes with a path or a full disk; any other OSError is our bug and keeps its traceback
USER_OS_ERRORS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                  errno.EDQUOT, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.ENOTEMPTY}


def os_error_line(err: OSError) -> str:
    """One line for a path or disk error: which file, what went wrong, what to do."""
    where = err.filename if err.filename is not None else "output"
    advice = "free some space and run again" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else \
        "choose a path that can be written (a folder, not a file; with write permission)"
    return f"{where}: {err.strerror or os.strerror(err.errno or 0)}; {advice}"


if __name__ == "__main__":
    main()
