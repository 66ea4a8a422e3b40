"""A killed run's temporaries (named for its process) are removed by the next run; a live process's are not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from medsight.files import atomic_dir, owner_tag, sweep_stale, sweep_tree, temp_prefix


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_removes_only_dead_processes_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "out"
    mine = tmp_path / (temp_prefix(target) + "x.tmp")
    dead = tmp_path / (temp_prefix(target).replace(owner_tag(), f"~{_dead_pid()}-{owner_tag()[-7:-1]}~") + "y.tmp")
    other = tmp_path / ".out.unrelated"
    for p in (mine, dead, other):
        p.mkdir()
    (dead / "half.bin").write_bytes(b"x")
    assert sweep_stale(target) == [dead]
    assert mine.is_dir() and other.is_dir() and not dead.exists()


def test_atomic_dir_and_sweep_tree_clear_a_killed_runs_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "set"
    target.parent.mkdir()
    dead_tag = f"~{_dead_pid()}-{owner_tag()[-7:-1]}~"
    left = target.parent / f".set.{dead_tag}abc.tmp"
    left.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert not left.exists() and (target / "a.txt").read_text() == "a"
    half = target / f".a.txt.{dead_tag}q.tmp"
    half.write_text("partial")
    assert sweep_tree(tmp_path) == [half] and not half.exists()
