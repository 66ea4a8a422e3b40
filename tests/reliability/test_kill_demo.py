"""``kill -9`` of ``medsight demo --fast`` inside a stage (real processes), then a rerun: no record claims a
partial stage, no summary describes a half-finished run, the rerun reuses the complete stages and redoes the rest,
nothing half-written is left, and the summary's figures equal an uninterrupted run's.

Three of the five stages (classification, safety, pathology: ~40 s uninterrupted on 2 cores) keep the test short;
segmentation and report are written through the same runner.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .processes import kill_within, start

STAGES = ("--stage", "classification", "--stage", "safety", "--stage", "pathology")
TEMP = re.compile(r"\.~\d+-[0-9a-f]{6}~")  # medsight.files.temp_prefix


def _demo(home: Path, out: Path) -> subprocess.Popen[bytes]:
    return start(home, "demo", "--fast", "--out", str(out), *STAGES, stderr=subprocess.PIPE)


def _run(home: Path, out: Path) -> None:
    p = _demo(home, out)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()


def _record(out: Path, stage: str) -> dict[str, Any] | None:
    try:
        return json.loads((out / "stages" / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return None


def _kill_in(home: Path, out: Path, stage: str, state: str, delay: float) -> bool:
    """Start the demo, wait until ``stage``'s record reads ``state``, then ``delay`` s more, and SIGKILL it."""
    p = _demo(home, out)
    deadline = time.monotonic() + 300
    while (_record(out, stage) or {}).get("state") != state:
        assert p.poll() is None, f"the demo ended before {stage} was {state}"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return kill_within(p, delay)


def _figures(results: dict[str, Any]) -> dict[str, Any]:
    """The deterministic part of a summary's results: no times, no paths."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if "seconds" not in k and k not in ("classifier", "timings_s")}
        return v

    return {k: strip(v) for k, v in results.items() if k != "total_seconds"}


def _after_kill(out: Path) -> None:
    assert not (out / "summary.json").exists(), "a summary for a run that did not finish"
    for stage in ("classification", "safety", "pathology"):
        rec = _record(out, stage)
        if rec and rec["state"] == "complete":  # a complete record's files are all there
            assert all(Path(p).exists() for p in rec["paths"].values()), stage


@pytest.mark.slow
def test_demo_killed_in_a_stage_resumes_and_equals_uninterrupted(tmp_path: Path) -> None:
    rng = random.Random(5)
    home = tmp_path / "home"
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(home, ref)
    want = json.loads((ref / "summary.json").read_text())

    # 1. inside classification (training): its record says running; the rerun must discard its files
    assert _kill_in(home, out, "classification", "running", rng.uniform(2, 8))
    _after_kill(out)
    assert _record(out, "classification")["state"] == "running"
    # 2. the rerun redoes classification, and is killed inside safety
    assert _kill_in(home, out, "classification", "complete", rng.uniform(1, 6))
    _after_kill(out)
    # 3. the last rerun reuses classification and finishes
    _run(home, out)
    got = json.loads((out / "summary.json").read_text())
    assert "classification" in got["reused_stages"]
    assert _figures(got["results"]) == _figures(want["results"])
    assert all(_record(out, s)["state"] == "complete" for s in ("classification", "safety", "pathology"))
    left = [str(p.relative_to(out)) for p in out.rglob("*") if TEMP.search(p.name)]
    assert left == [], "a killed run's temporaries were left"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if "tensorboard" not in p.parts) == \
        sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if "tensorboard" not in p.parts)
