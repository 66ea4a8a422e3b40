"""How many torch threads a CPU job should take right now (the demo's stages and the benchmarks ask this)."""

from __future__ import annotations

import os
import time


def threads_for_now() -> int:
    """One torch thread when the machine is already busy: OpenMP threads that wait for a shared core spin and
    make every convolution many times slower; all cores (up to 4) when it is free.

    Busy = less than one core idle over a quarter of a second (/proc/stat). The load average is only the fallback:
    it trails by minutes, so a demo started just after other work ended ran on one thread (247 s of training
    instead of ~140 s).

    An explicit ``OMP_NUM_THREADS`` is the user's choice (the PyTorch convention) and wins over the measurement, so
    that two runs of one command with the same setting train with the same threads and give the same figures."""
    cores = os.cpu_count() or 1
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return min(int(explicit), cores)
    if cores < 2:
        return 1
    idle = idle_cores(0.25)
    if idle is None:
        try:
            idle = cores - os.getloadavg()[0]
        except OSError:
            idle = float(cores)
    return 1 if idle < 1.0 else min(cores, 4)


def idle_cores(seconds: float) -> float | None:
    """Cores idle on average over ``seconds`` (from /proc/stat), or None where /proc/stat is not readable."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + (v[4] if len(v) > 4 else 0), sum(v)  # idle + iowait, total (all cores, in ticks)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)
