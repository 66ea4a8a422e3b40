"""Real ``medsight`` processes for the kill tests: run one to the end, or SIGKILL one after a delay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def medsight_env(home: Path) -> dict[str, str]:
    """One OpenMP thread (two test processes must not spin on each other's core) and a private MEDSIGHT_HOME."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MEDSIGHT_HOME": str(home)}


def start(home: Path, *argv: str, stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "-q", *argv], env=medsight_env(home),
                            stdout=subprocess.DEVNULL, stderr=stderr)


def run_medsight(home: Path, *argv: str) -> float:
    """Run to the end (it must succeed); returns the wall seconds it took."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "medsight.cli.main", "-q", *argv], env=medsight_env(home),
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    return time.perf_counter() - t


def kill_within(p: subprocess.Popen[bytes], seconds: float) -> bool:
    """SIGKILL ``p`` unless it ends within ``seconds``; True when the kill landed (it was still running)."""
    try:
        p.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return True


def kill_after(home: Path, seconds: float, *argv: str) -> bool:
    """Start medsight with ``argv`` and SIGKILL it after ``seconds``; True when it was still running."""
    return kill_within(start(home, *argv), seconds)
