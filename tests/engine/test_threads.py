"""The thread choice of CPU jobs: one thread when less than one core is idle now (not by the trailing load average)."""

from __future__ import annotations

import os

import medsight.engine.threads as threads


def test_threads_follow_idle_cores_now(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # a trailing average from finished work
    monkeypatch.setattr(threads, "idle_cores", lambda s: 1.9)
    assert threads.threads_for_now() == 2
    monkeypatch.setattr(threads, "idle_cores", lambda s: 0.6)
    assert threads.threads_for_now() == 1
    monkeypatch.setattr(threads, "idle_cores", lambda s: None)  # no /proc/stat: the load average decides
    assert threads.threads_for_now() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert threads.threads_for_now() == 2


def test_an_explicit_omp_num_threads_wins(monkeypatch) -> None:
    """The kill test of the demo runs it twice with OMP_NUM_THREADS=1 and compares the figures: a measured choice
    of 2 threads in one run and 1 in the other changed them (summation order)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda s: 1.9)  # idle: the measurement alone would say 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.threads_for_now() == 1
    monkeypatch.setattr(threads, "idle_cores", lambda s: 0.1)  # busy: an explicit 2 is still the user's choice
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.threads_for_now() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # never more than the machine has
    assert threads.threads_for_now() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty or junk: measured
    assert threads.threads_for_now() == 1


def test_idle_cores_is_within_the_machine() -> None:
    idle = threads.idle_cores(0.1)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-6
