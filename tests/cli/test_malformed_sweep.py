"""Every command of the CLI's command table x every kind of malformed input: exit 2, one stderr line, no traceback.

The cases are generated from ``medsight.cli.main.COMMANDS`` and each command's click parameters, so a command added
to the table is swept without editing this file. Per command, every input (a path argument or option that is not an
output, and a model reference: ``MODEL`` / ``PACKAGE``) receives the same malformed value: a path that does not
exist, a text file, a CSV with an unterminated quote, an empty file, a directory holding only a text file. Outputs
get a fresh path; required non-path options a plausible value. Commands run in this process (seconds for the whole
sweep); each has a wall-clock guard so that a command which starts working on bad input fails instead of hanging.
``tests/cli/test_bad_input.py`` keeps the hand-written rows (option-specific mistakes, full disk).
"""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from typing import Any

import click
import pytest

from medsight.cli.main import COMMANDS, cli, main

# parameter names that are written, not read (an option called --model-dir is train's output; the argument of that
# name is predict's input)
OUTPUT_NAMES = {"output", "output_dir", "out", "out_dir", "dest", "report_path", "heatmaps", "package_dir",
                "folder"}  # folder: `federated app FOLDER` writes the Flower app there
MODEL_NAMES = {"model", "model_dir", "package", "inputs"}  # text arguments that name a package or input files
STATE_NAMES = {"home"}  # a service home: created when missing, a folder is what it is; only files are malformed
DB_URL_NAMES = {"url", "registry_url", "db_url"}  # a database path: an empty file is a valid empty SQLite database
REQUIRED_VALUES = {"site": "A", "name": "x", "service_url": "http://127.0.0.1:9"}
SITE_DATA = {"site_args"}  # `federated run --site NAME=DATA`, twice (a federation needs two sites): DATA is an input
KINDS = ("missing", "text", "unterminated_csv", "empty", "directory")
GUARD_S = 120


@functools.cache
def _leaves() -> list[tuple[list[str], click.Command]]:
    ctx = click.Context(cli)
    out: list[tuple[list[str], click.Command]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])
        else:
            out.append((path, cmd))

    for name in sorted(COMMANDS):
        command = cli.get_command(ctx, name)
        assert command is not None, f"{name} of the command table cannot be imported"
        walk(command, [name])
    return out


def _role(p: click.Parameter) -> str:
    """'output', 'input', 'state', 'db' or 'other' for one click parameter."""
    is_path = isinstance(p.type, click.Path)
    if p.name in OUTPUT_NAMES or (isinstance(p, click.Option) and p.name == "model_dir"):
        return "output" if is_path else "other"
    if p.name in STATE_NAMES and is_path:
        return "state"
    if p.name in DB_URL_NAMES:
        return "db"
    if p.name in SITE_DATA:
        return "input"
    if is_path or (isinstance(p, click.Argument) and p.name in MODEL_NAMES):
        return "input"
    return "other"


def _applies(role: str, kind: str) -> bool:
    if role == "input":
        return True
    if role == "state":
        return kind in ("text", "unterminated_csv", "empty")
    if role == "db":
        return kind in ("text", "unterminated_csv", "directory")
    return False


def _opt(p: click.Option) -> str:
    return max(p.opts, key=len)


def _case(cmd: click.Command, kind: str) -> list[tuple[click.Parameter, str]] | None:
    """(parameter, role) pairs to fill for ``kind``: every required one, and the optional malformable ones when the
    command has no required input; None when the command has nothing this kind can malform."""
    params = [p for p in cmd.params if p.name != "help"]
    roles = {id(p): _role(p) for p in params}
    required_inputs = [p for p in params if p.required and _applies(roles[id(p)], kind)]
    optional = [] if required_inputs else [p for p in params if not p.required and _applies(roles[id(p)], kind)]
    if not required_inputs and not optional:
        return None
    return [(p, roles[id(p)]) for p in params if p.required or p in optional]


CASES = []
NOTHING_TO_MALFORM = set()
for _path, _cmd in _leaves():
    for _kind in KINDS:
        if _case(_cmd, _kind) is not None:
            CASES.append(pytest.param(_path, _kind, id=f"{'-'.join(_path)}[{_kind}]"))
    if all(_case(_cmd, k) is None for k in KINDS):
        NOTHING_TO_MALFORM.add(" ".join(_path))


def test_every_command_with_an_input_is_swept():
    """A command that reads no file (nothing to malform) is named here on purpose, so a new one is noticed."""
    assert NOTHING_TO_MALFORM == {"demo", "federated app"}
    assert {c.values[0][0] for c in CASES} == set(COMMANDS) - {"demo"}


def _malformed(root: Path, kind: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return root / "no_such_file.nii.gz"
    if kind == "text":
        path = root / "notes.txt"
        path.write_text("this is a note, not an image, a package or a table\n")
    elif kind == "unterminated_csv":
        path = root / "unterminated.csv"
        path.write_text('image,label,patient_id,slide_id,split\n"a.nii.gz,1,p1,s1,train\nb.nii.gz,0,p2,s2,val\n')
    elif kind == "empty":
        path = root / "empty.csv"
        path.write_bytes(b"")
    else:
        path = root / "a_folder"
        path.mkdir()
        (path / "notes.txt").write_text("a folder of notes where a file, package or dataset was expected\n")
    return path


def _argv(path: list[str], cmd: click.Command, kind: str, bad: Path, out: Path) -> list[str]:
    argv = list(path)
    for p, role in _case(cmd, kind) or []:
        if p.name in SITE_DATA:
            argv += [_opt(p), f"A={bad}", _opt(p), f"B={bad}"]  # type: ignore[arg-type]
            continue
        if role == "output":
            value = str(out / (p.name or "out"))
        elif role in ("input", "state", "db"):
            value = str(bad)
        elif isinstance(p.type, click.Choice):
            value = str(p.type.choices[0])
        else:
            value = REQUIRED_VALUES.get(p.name or "", "x")
        argv += [value] if isinstance(p, click.Argument) else [_opt(p), value]  # type: ignore[arg-type]
    return argv


class _Hung(Exception):
    pass


def _alarm(*_: Any) -> None:
    raise _Hung(f"still running after {GUARD_S} s on malformed input")


@pytest.mark.parametrize(("path", "kind"), CASES)
def test_malformed_input_is_one_line_and_exit_2(path: list[str], kind: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cmd = dict((tuple(p), c) for p, c in _leaves())[tuple(path)]
    bad = _malformed(tmp_path / "in", kind)
    argv = _argv(path, cmd, kind, bad, tmp_path / "out")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(GUARD_S)
    try:
        main(["-q", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"medsight {' '.join(argv)}: exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("medsight: error:"), f"medsight {' '.join(argv)}:\n{err}"
