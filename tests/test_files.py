"""files.atomic_path: durable by default (file and folder fsynced), and without fsyncs on request (issue 33: two
fsyncs per slice file were half of the demo's slice build); either way a failed write leaves the target as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medsight.files import atomic_path


@pytest.mark.parametrize("durable, fsyncs", [(True, 2), (False, 0)])
def test_atomic_path_fsyncs_only_when_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool,
                                              fsyncs: int) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the rename
    assert target.read_text() == "new" and len(calls) == fsyncs
    with pytest.raises(RuntimeError), atomic_path(target, durable=durable) as tmp:
        tmp.write_text("torn")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
