"""Short fuzz run of the DICOM paths (the long one is benchmarks/bench_fuzz.py): byte flips and truncations of
real pydicom / pydicom-data files with planted identifiers, through both de-identification paths and through the
``info`` and ``deid`` commands. Never a crash of the fast path, never a hang, never a written file holding a
planted identifier; where both paths accept a file they write the same dataset."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from dicom_fuzz import PLANTED_BYTES, cases, judge, planted_bases, time_limit, write_cases  # noqa: E402

from medsight.cli.main import main  # noqa: E402

N_CASES, SEED = 160, 1


@pytest.fixture(scope="module")
def bases() -> dict[str, bytes]:
    found = planted_bases()
    if len(found) < 6:
        pytest.fail(f"only {len(found)} of the fuzz base files are shipped with pydicom / pydicom-data")
    return found


def test_both_deid_paths_survive_mutations(bases: dict[str, bytes]) -> None:
    tally: Counter[str] = Counter()
    for name, how, data in cases(N_CASES, SEED, bases):
        o = judge(data, seconds=10)
        assert not o.hang, f"{name} {how}: hang"
        assert not o.fast.startswith("crash"), f"{name} {how}: fast path {o.fast} (must be output or Unsupported)"
        assert not o.leaks, f"{name} {how}: planted identifier written by the {o.leaks} path"
        assert o.agree is not False, f"{name} {how}: fast and pydicom paths wrote different datasets"
        tally[f"{o.fast}/{o.pydicom.split(':')[0]}"] += 1
    # the run must exercise every branch, or it proves little: both accept, fast refuses, pydicom refuses
    assert tally["written/written"] >= 20 and tally["unsupported/written"] >= 20, tally
    assert sum(v for k, v in tally.items() if k.endswith(("refused", "not-dicom"))) >= 5, tally


def test_info_and_deid_commands_on_mutated_files(bases: dict[str, bytes], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    files = write_cases(tmp_path / "in", 48, SEED + 1, bases)
    outcomes: Counter[int] = Counter()
    for path in files:
        with time_limit(20):
            try:
                main(["-q", "info", str(path)])
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, f"info {path.name}: exit {code}\n{err}"
        if code == 2:
            assert err.startswith("medsight: error:") and len(err.strip().splitlines()) == 1, err
        outcomes[code] += 1
    assert outcomes[0] and outcomes[2], outcomes  # some mutated files still read, some are refused

    out = tmp_path / "out"
    with time_limit(120):
        try:
            main(["-q", "deid", str(tmp_path / "in"), str(out), "-j", "1", "--allow-burned-in"])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    rows = list(csv.DictReader((out / "deid_report.csv").open()))
    assert sorted(r["input"] for r in rows) == sorted(p.name for p in files)
    written = [p for p in out.rglob("*.dcm")]
    # mutated copies of one file keep its SOP Instance UID, so they share an output name: one file per name
    assert sorted(p.relative_to(out).as_posix() for p in written) == \
        sorted({r["output"] for r in rows if r["status"] == "written"})
    assert len(written) >= 5
    for p in written:
        data = p.read_bytes()
        assert not any(s in data for s in PLANTED_BYTES), f"{p} holds a planted identifier"
