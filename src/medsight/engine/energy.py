"""Energy and carbon of a run: measured from hardware counters where readable, otherwise estimated, and always
labelled which.

``with EnergyMeter() as m: ...`` then ``m.record()`` -> ``{"kwh", "co2_kg", "seconds", "method", "measured", ...}``.

- measured: Intel/AMD RAPL counters (``/sys/class/powercap/intel-rapl:*/energy_uj``, package + DRAM domains;
  they count the whole socket, every process on it) and, for NVIDIA GPUs, NVML's total-energy counter (when the
  ``pynvml``/``nvidia-ml-py`` module is importable). Kernels since 5.10 make RAPL root-only, so most users get:
- estimated: CPU-seconds of this process and its children x ``MEDSIGHT_WATTS_PER_CORE`` (default 10 W per busy
  core, a mid-range server core's share of its TDP) + peak resident memory x 0.375 W/GB x wall time (the figure
  CodeCarbon uses) — then x PUE (``MEDSIGHT_PUE``, default 1.0: no data-centre overhead assumed).

Carbon = kWh x ``MEDSIGHT_CARBON_INTENSITY`` kg CO2e/kWh (default 0.475, the IEA 2019 world average). Why not
CodeCarbon itself: with our pins it pulls 16 more packages (nvidia-ml-py, cryptography, authlib for its cloud
API...); reading two counters and stating an estimate is ~100 lines.
"""

from __future__ import annotations

import glob
import os
import resource
import time
from pathlib import Path
from typing import Any

RAPL_GLOB = "/sys/class/powercap/intel-rapl:*"
DEFAULT_WATTS_PER_CORE = 10.0
MEMORY_WATTS_PER_GB = 0.375
DEFAULT_PUE = 1.0
DEFAULT_CARBON_INTENSITY = 0.475  # kg CO2e per kWh, IEA 2019 world average


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _rapl_domains() -> list[Path]:
    """Top-level RAPL domains (packages; their DRAM sub-domains are read separately) whose counter is readable."""
    out = []
    for d in sorted(glob.glob(RAPL_GLOB)) + sorted(glob.glob(RAPL_GLOB + "/intel-rapl:*:*")):
        p = Path(d)
        name = (p / "name").read_text().strip() if (p / "name").is_file() else ""
        if p.parent.name.startswith("intel-rapl:") and name != "dram":
            continue  # core/uncore sub-domains are already inside the package figure
        try:
            int((p / "energy_uj").read_text())
        except (OSError, ValueError):
            continue
        out.append(p)
    return out


def _read_uj(domain: Path) -> tuple[int, int]:
    value = int((domain / "energy_uj").read_text())
    try:
        wrap = int((domain / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        wrap = 0
    return value, wrap


def _nvml_handles() -> tuple[Any, list[Any]]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        for h in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        return pynvml, handles
    except Exception:  # noqa: BLE001 - no NVML, no GPU, or a GPU without the counter: not measurable
        return None, []


def _cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _peak_rss_gb() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (max(s.ru_maxrss, c.ru_maxrss)) / 1024 ** 2  # ru_maxrss is in KiB on Linux


class EnergyMeter:
    """Context manager measuring (or estimating) the energy of the code it wraps; ``record()`` after exit."""

    def __init__(self, use_counters: bool = True) -> None:
        self.use_counters = use_counters
        self._start: dict[str, Any] = {}
        self._end: dict[str, Any] | None = None

    def _snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"wall": time.perf_counter(), "cpu": _cpu_seconds()}
        if self.use_counters:
            snap["rapl"] = {str(d): _read_uj(d) for d in self._rapl}
            if self._nvml is not None:
                snap["nvml_mj"] = [int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._gpus]
        return snap

    def __enter__(self) -> EnergyMeter:
        self._rapl = _rapl_domains() if self.use_counters else []
        self._nvml, self._gpus = _nvml_handles() if self.use_counters else (None, [])
        self._start, self._end = self._snapshot(), None
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = self._snapshot()

    def record(self) -> dict[str, Any]:
        """kWh, kg CO2e, seconds, method (how it was obtained), measured (True only for counter readings)."""
        end = self._end or self._snapshot()
        seconds = end["wall"] - self._start["wall"]
        cpu = end["cpu"] - self._start["cpu"]
        pue = _env_float("MEDSIGHT_PUE", DEFAULT_PUE)
        intensity = _env_float("MEDSIGHT_CARBON_INTENSITY", DEFAULT_CARBON_INTENSITY)
        joules, parts = 0.0, []
        for key, (after, wrap) in end.get("rapl", {}).items():
            before = self._start["rapl"][key][0]
            delta = after - before if after >= before else after + wrap - before
            joules += delta / 1e6
        if end.get("rapl"):
            parts.append(f"RAPL counters ({len(end['rapl'])} domains, whole socket)")
        if end.get("nvml_mj"):
            joules += sum(a - b for a, b in zip(end["nvml_mj"], self._start["nvml_mj"])) / 1e3
            parts.append(f"NVML energy counter ({len(self._gpus)} GPU)")
        measured = bool(parts)
        rec: dict[str, Any] = {"seconds": seconds, "cpu_seconds": cpu, "pue": pue,
                               "carbon_intensity_kg_per_kwh": intensity}
        if measured:
            method = "measured: " + " + ".join(parts) + f", x PUE {pue}"
        else:
            watts = _env_float("MEDSIGHT_WATTS_PER_CORE", DEFAULT_WATTS_PER_CORE)
            mem_gb = _peak_rss_gb()
            joules = cpu * watts + mem_gb * MEMORY_WATTS_PER_GB * seconds
            method = (f"estimated: {cpu:.1f} CPU-s x {watts:g} W/core + {mem_gb:.2f} GB peak memory x "
                      f"{MEMORY_WATTS_PER_GB} W/GB x {seconds:.1f} s, x PUE {pue} (no readable RAPL/NVML counter)")
            rec.update(watts_per_core=watts, memory_gb=mem_gb)
        kwh = joules * pue / 3.6e6
        rec.update(kwh=kwh, co2_kg=kwh * intensity, method=method, measured=measured)
        return rec
