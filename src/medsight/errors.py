"""Every failure a user can cause is a MedsightError with a one-line, actionable message.

The CLI prints ``str(error)`` on one line and exits with status 2; anything else is our bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


class MedsightError(Exception):
    """Base class of user-facing errors. ``path`` names the offending file when there is one."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        text = " ".join(message.split())
        super().__init__(f"{self.path}: {text}" if self.path else text)


class InputNotFoundError(MedsightError):
    """A file or folder the user named does not exist or holds nothing usable."""


class CorruptFileError(MedsightError):
    """A file could not be parsed in the format it claims to be."""


class UnsupportedFormatError(MedsightError):
    """A format, transfer syntax or pixel layout that medsight does not read."""


class MissingPixelDataError(MedsightError):
    """A DICOM object with no image (a report, a structure set) where an image was expected."""


class MixedSeriesError(MedsightError):
    """Files of several series were given where one series was expected."""


class GeometryError(MedsightError):
    """Spacing, orientation or shape is inconsistent (uneven slices, mismatched grids)."""


class DatasetError(MedsightError):
    """A dataset, manifest or label file is malformed or inconsistent."""


class ConfigError(MedsightError):
    """An option, plan or model configuration is invalid."""


class MetricError(MedsightError):
    """A metric was asked for on inputs where it is undefined (mismatched shapes, NaN scores...)."""


class IntegrityError(MedsightError):
    """A stored artifact or audit record no longer matches its recorded hash."""


class AccessDeniedError(MedsightError):
    """The caller lacks the role or credentials for an action."""
