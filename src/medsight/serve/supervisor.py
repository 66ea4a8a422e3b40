"""Supervised worker processes: a dead worker is replaced, the server's end ends them all.

``medsight serve`` starts N worker processes and a supervisor thread that checks them every ``check_s``; a worker
that died (killed, out of memory, a crash) is started again after a back-off that grows while it keeps dying (so a
worker that cannot start does not spin), and every restart is logged and counted for ``/healthz``. Each worker
gets a name no other process has used (slot, generation, server pid): the job store's exactly-once rule relies on
names, so a replacement never inherits its predecessor's claims. ``stop()`` terminates, then kills, every worker.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    index: int
    proc: Any = None  # multiprocessing Process
    name: str = ""
    generation: int = 0
    restarts: int = 0
    died_at: float | None = None
    backoff_s: float = 0.0
    last_exit: int | None = None
    proc_started: float = 0.0


class Supervisor:
    """Keep ``n`` workers running ``worker_main(settings_json, name, parent_pid=...)``."""

    def __init__(self, settings_json: str, n: int, check_s: float = 0.5, min_backoff_s: float = 2.0,
                 max_backoff_s: float = 30.0, on_death: Callable[[str], object] | None = None) -> None:
        self.settings_json, self.check_s, self.on_death = settings_json, check_s, on_death
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.slots = [_Slot(i) for i in range(n)]
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="medsight-supervisor", daemon=True)

    def start(self) -> "Supervisor":
        with self._lock:
            for slot in self.slots:
                self._spawn(slot)
        self._thread.start()
        return self

    def _spawn(self, slot: _Slot) -> None:
        from medsight.serve.worker import worker_main

        slot.generation += 1
        slot.name = f"worker-{slot.index}.{slot.generation}@{os.getpid()}"
        slot.proc = self._ctx.Process(target=worker_main, args=(self.settings_json, slot.name),
                                      kwargs={"parent_pid": os.getpid()}, daemon=True, name=slot.name)
        slot.proc.start()
        slot.died_at, slot.proc_started = None, time.time()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_s):
            with self._lock:
                if self._stop.is_set():
                    return
                now = time.time()
                for slot in self.slots:
                    if slot.proc.is_alive():
                        if slot.backoff_s and now - slot.proc_started > 60:
                            slot.backoff_s = 0.0  # it has run a minute: forget earlier crashes
                        continue
                    if slot.died_at is None:  # just found dead: reap it and schedule the restart
                        slot.proc.join(0)
                        slot.last_exit, slot.died_at = slot.proc.exitcode, now
                        slot.backoff_s = min(self.max_backoff_s, max(self.min_backoff_s, slot.backoff_s * 2))
                        log.warning("%s (pid %s) died with exit code %s; restarting in %.0f s", slot.name,
                                    slot.proc.pid, slot.last_exit, slot.backoff_s)
                        self._released(slot.name)
                    elif now - slot.died_at >= slot.backoff_s:
                        slot.restarts += 1
                        self._spawn(slot)
                        log.warning("restarted worker slot %d as %s (pid %s)", slot.index, slot.name, slot.proc.pid)

    def _released(self, name: str) -> None:
        """The dead worker's jobs go back to the queue now (it is reaped: it cannot finish them)."""
        if self.on_death is None:
            return
        try:
            self.on_death(name)
        except Exception:  # noqa: BLE001 - the lease still returns them later
            log.exception("could not re-queue the jobs of %s", name)

    def status(self) -> list[dict[str, Any]]:
        """One entry per worker slot, for /healthz."""
        with self._lock:
            return [{"name": s.name, "pid": s.proc.pid if s.proc else None,
                     "alive": bool(s.proc and s.proc.is_alive()), "restarts": s.restarts,
                     "last_exit_code": s.last_exit} for s in self.slots]

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate every worker (SIGTERM), then kill the ones still there after ``timeout_s``."""
        self._stop.set()
        with self._lock:
            procs = [s.proc for s in self.slots if s.proc is not None]
            for p in procs:
                if p.is_alive():
                    p.terminate()
            deadline = time.time() + timeout_s
            for p in procs:
                p.join(max(0.0, deadline - time.time()))
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(2)
