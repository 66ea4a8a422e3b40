"""One audit wrapper for every clinical command: who ran what, on which inputs, with which model, producing what.

``@audited("predict", inputs=("input_path",), outputs=("output",))`` on a click command adds ``--actor`` and,
around the command: opens the audit log first (a log that cannot be opened stops the command before it does
anything), meters energy, and afterwards appends one event with actor (``--actor``, else $MEDSIGHT_ACTOR, else the
OS user), command, SHA-256 of the named inputs and outputs, the package id, exit status and energy. The command
adds what only it knows through ``current_event()`` (``.package(pkg)``, ``.inputs(...)``, ``.note(...)``).
When the record cannot be written the command fails with exit 2: a clinical run never finishes without trace.
"""

from __future__ import annotations

import contextvars
import functools
import getpass
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from medsight.errors import MedsightError
from medsight.files import sha256_file


class AuditError(MedsightError):
    """The audit record of a command could not be written."""


def hash_path(path: str | Path) -> dict[str, Any]:
    """{"path", "sha256"} of a file, or of a folder (SHA-256 over its sorted (relative path, file hash) lines)."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "sha256": sha256_file(p)}
    if p.is_dir():
        h, n = hashlib.sha256(), 0
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
            n += 1
        return {"path": str(p), "sha256": h.hexdigest(), "files": n}
    return {"path": str(p), "sha256": None, "missing": True}


class AuditEvent:
    """What one command run reports; filled by the wrapper and by the command itself."""

    def __init__(self, command: str, actor: str) -> None:
        self.command, self.actor = command, actor
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        self.package_ids: list[str] = []
        self.notes: dict[str, Any] = {}

    def inputs(self, paths: Iterable[str | Path]) -> AuditEvent:
        for p in paths:
            self._inputs.setdefault(str(p), hash_path(p))
        return self

    def outputs(self, paths: Iterable[str | Path]) -> AuditEvent:
        for p in paths:
            self._outputs[str(p)] = None  # hashed when the command has finished
        return self

    def package(self, pkg: Any) -> AuditEvent:
        """Record the id of a package the command loaded or wrote (``Package`` or id string)."""
        pid = pkg if isinstance(pkg, str) else pkg.id
        if pid not in self.package_ids:
            self.package_ids.append(pid)
        return self

    def note(self, **values: Any) -> AuditEvent:
        self.notes.update(values)
        return self

    def details(self, status: int, energy: dict[str, Any] | None) -> dict[str, Any]:
        outputs = [hash_path(p) for p in self._outputs]
        return {**self.notes, "command": self.command, "exit_status": status, "inputs": list(self._inputs.values()),
                "outputs": [o for o in outputs if not o.get("missing")],
                "package_id": self.package_ids[-1] if self.package_ids else None, "package_ids": self.package_ids,
                "energy": energy}


_CURRENT: contextvars.ContextVar[AuditEvent | None] = contextvars.ContextVar("medsight_audit_event", default=None)


def current_event() -> AuditEvent:
    """The event of the command now running (a detached one outside an audited command, so callers need no check)."""
    ev = _CURRENT.get()
    return ev if ev is not None else AuditEvent("(not audited)", "-")


def _values(kwargs: dict[str, Any], names: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for name in names:
        v = kwargs.get(name)
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            if item is not None and str(item):
                out.append(Path(item))
    return out


def _open_log():  # noqa: ANN202 - AuditLog
    try:
        from medsight.audit.log import default_audit_log

        return default_audit_log()
    except Exception as err:  # noqa: BLE001 - any reason the log cannot be opened stops a clinical command
        raise AuditError(f"cannot open the audit log ({err}); the command was not run. Fix $MEDSIGHT_AUDIT_URL / "
                         "$MEDSIGHT_HOME or the database") from err


def audited(command: str, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> Callable:
    """Decorator for a click command callback (put it under ``@click.command`` and the options)."""
    inputs, outputs = tuple(inputs), tuple(outputs)

    def decorate(fn: Callable) -> Callable:
        @click.option("--actor", default=None,
                      help="Who runs this, for the audit log (default: $MEDSIGHT_ACTOR or the OS user).")
        @functools.wraps(fn)
        def wrapper(*args: Any, actor: str | None = None, **kwargs: Any) -> Any:
            from medsight.engine.energy import EnergyMeter

            if int(os.environ.get("RANK", "0") or 0) > 0:  # a data-parallel worker: rank 0 records the run
                return fn(*args, **kwargs)
            log = _open_log()
            event = AuditEvent(command, actor or os.environ.get("MEDSIGHT_ACTOR") or getpass.getuser())
            event.inputs(_values(kwargs, inputs)).outputs(_values(kwargs, outputs))
            token = _CURRENT.set(event)
            status = 1
            meter = EnergyMeter()
            try:
                with meter:
                    result = fn(*args, **kwargs)
                status = 0
                return result
            except MedsightError:
                status = 2
                raise
            except click.exceptions.Exit as err:
                status = err.exit_code
                raise
            finally:
                _CURRENT.reset(token)
                try:
                    log.append(command, event.actor, **event.details(status, meter.record()))
                except Exception as err:  # noqa: BLE001 - a lost record fails the run
                    if status == 0:
                        raise AuditError(f"the command ran but its audit record could not be written ({err}); "
                                         "treat its outputs as untraced") from err
                    click.echo(f"medsight: error: audit record could not be written either: {err}", err=True)

        return wrapper

    return decorate
