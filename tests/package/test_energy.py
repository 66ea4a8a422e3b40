"""EnergyMeter: RAPL counters (a fake powercap tree with known readings) are reported as measured, with wrap-around;
without readable counters the figure is an estimate from CPU-seconds, labelled so, equal to the stated formula."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from medsight.engine import energy
from medsight.engine.energy import EnergyMeter


def _domain(root: Path, name: str, kind: str, value: int, wrap: int) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(kind + "\n")
    (d / "energy_uj").write_text(f"{value}\n")
    (d / "max_energy_range_uj").write_text(f"{wrap}\n")
    return d


def test_rapl_counters_are_measured_including_wraparound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg0 = _domain(tmp_path, "intel-rapl:0", "package-0", 1_000_000, 10_000_000)
    dram = _domain(pkg0, "intel-rapl:0:1", "dram", 9_900_000, 10_000_000)
    _domain(pkg0, "intel-rapl:0:0", "core", 5, 10_000_000)  # inside the package figure: must not be added again
    monkeypatch.setattr(energy, "RAPL_GLOB", str(tmp_path / "intel-rapl:*"))
    monkeypatch.setattr(energy, "_nvml_handles", lambda: (None, []))
    monkeypatch.setenv("MEDSIGHT_PUE", "1.5")
    monkeypatch.setenv("MEDSIGHT_CARBON_INTENSITY", "0.2")
    with EnergyMeter() as m:
        (pkg0 / "energy_uj").write_text("4600000\n")  # +3.6 J
        (dram / "energy_uj").write_text("100000\n")  # wrapped: +0.2 J
    r = m.record()
    joules = 3.6 + 0.2
    assert r["measured"] is True and r["method"].startswith("measured: RAPL counters (2 domains")
    assert r["kwh"] == pytest.approx(joules * 1.5 / 3.6e6)
    assert r["co2_kg"] == pytest.approx(r["kwh"] * 0.2)


def test_without_counters_the_estimate_follows_the_stated_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "RAPL_GLOB", "/nonexistent/intel-rapl:*")
    monkeypatch.setattr(energy, "_nvml_handles", lambda: (None, []))
    monkeypatch.setenv("MEDSIGHT_WATTS_PER_CORE", "20")
    monkeypatch.delenv("MEDSIGHT_PUE", raising=False)

    def cpu() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    with EnergyMeter() as m:
        x = 0
        while time.perf_counter() - t0 < 0.3:
            x += 1
    c1, t1 = cpu(), time.perf_counter()
    r = m.record()
    assert r["measured"] is False and r["method"].startswith("estimated:") and "20 W/core" in r["method"]
    expected = r["cpu_seconds"] * 20 + r["memory_gb"] * energy.MEMORY_WATTS_PER_GB * r["seconds"]
    assert r["kwh"] == pytest.approx(expected / 3.6e6)
    assert 0 < r["cpu_seconds"] <= (c1 - c0) + 0.02 and r["seconds"] <= t1 - t0 + 1e-3
    assert r["co2_kg"] == pytest.approx(r["kwh"] * energy.DEFAULT_CARBON_INTENSITY)
