"""File helpers every layer uses: content hashes and atomic writes (no half-written output, ever)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medsight.errors import DatasetError, InputNotFoundError

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def owner_tag() -> str:
    """``~<pid>-<host hash>~``: marks a temporary as this process's, so that a later run can tell a killed run's
    leftover (its process is gone) from a temporary that a concurrent run is still writing."""
    return f"~{os.getpid()}-{_HOST}~"


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temp_prefix(target: str | Path, kind: str = "") -> str:
    """The name prefix of a temporary beside ``target``: ``.<name>.~<pid>-<host>~<kind>``."""
    return f".{Path(target).name}.{owner_tag()}{kind}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str, prefix: str | None = None) -> bool:
    """Whether ``name`` is a temporary (``temp_prefix``) of a process of this host that no longer runs."""
    if not name.startswith(".") or (prefix is not None and not name.startswith(prefix)):
        return False
    m = re.search(r"\.~(\d+)-([0-9a-f]{6})~", name)
    return bool(m) and m.group(2) == _HOST and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1)))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_stale(target: str | Path) -> list[Path]:
    """Remove the temporaries a killed run left beside ``target`` (``.<name>.~<pid>-<host>~...`` of a process that
    is gone); those of running processes and of other hosts are left alone. Returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    prefix = f".{target.name}."
    gone = [p for p in target.parent.iterdir() if _stale(p.name, prefix)]
    for p in gone:
        _remove(p)
    return gone


def sweep_tree(root: str | Path) -> list[Path]:
    """``sweep_stale`` for every temporary anywhere under ``root`` (a killed run's half-written files and folders)."""
    root = Path(root)
    if not root.is_dir():
        return []
    gone: list[Path] = []
    for folder, dirs, files in os.walk(root):
        stale = [name for name in [*dirs, *files] if _stale(name)]  # one liveness check per name
        for name in stale:
            _remove(Path(folder) / name)
            gone.append(Path(folder) / name)
        dirs[:] = [d for d in dirs if d not in stale]  # removed: nothing to walk into
    return gone


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "", durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is left as it was. ``suffix`` keeps the
    extension for writers that choose a format by file name (``.nii.gz``, ``.png``). ``durable=False`` skips the
    two fsyncs (still never a torn file): for the thousands of files of a regenerable cache whose completion
    stamp is written after one ``os.sync()`` (two fsyncs per small file were half of the demo's slice build).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
        if durable:
            _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_with(target: str | Path, writer: Callable[[Path], None], suffix: str = "") -> None:
    """Run ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(target, suffix=suffix) as tmp:
        writer(tmp)


@contextlib.contextmanager
def atomic_dir(target: str | Path, replaces: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it becomes ``target`` in one rename.

    For sets of files that belong together (an evaluation's tables, a report and its figures): a crash or kill
    leaves the old set or the new one, never a mix. Entries of an existing ``target`` not named in ``replaces``
    (nor written anew) are someone else's: they are hard-linked into the new folder first, so they survive the
    swap. On any exception the temporary folder is removed and ``target`` is left as it was. A leftover
    ``.<name>.~<pid>-<host>~*.tmp`` folder beside ``target`` is a killed run (it never shadows the outputs); the
    next ``atomic_dir`` of the same target removes it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
    sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if target.exists():
            for entry in target.iterdir():
                if entry.name in replaces or (tmp / entry.name).exists():
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, tmp / entry.name, copy_function=_link_or_copy, symlinks=True)
                else:
                    _link_or_copy(entry, tmp / entry.name)
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def read_csv(path: str | Path, what: str = "CSV", **kwargs: Any) -> Any:
    """``pandas.read_csv`` for a file a user gave: any parse failure is a one-line DatasetError naming the file.

    Malformed quoting, rows with more fields than the header, undecodable bytes and an empty file are user
    mistakes, not crashes; ``what`` names the table in the message ("predictions CSV", "manifest").
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"no such {what}; check the path", path)
    kwargs.setdefault("index_col", False)  # a row with extra fields is an error, not a silent index column
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise DatasetError(f"the {what} is empty; it needs a header line and one row per case", path) from err
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(f"not a readable {what} ({first}); save it as comma-separated UTF-8 text", path) from err
    return table


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def installed_data_file(package: str, relative: str) -> Path | None:
    """A data file shipped inside an installed package (found without importing the package), or None."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None
