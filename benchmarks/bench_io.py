"""Claim: medsight reads an uncompressed CT series >= 2x faster than SimpleITK, and compressed series (JPEG 2000,
RLE) no slower, with identical voxels and geometry, and peaks at <= 1.3x the volume's size in memory.

Series are generated from pydicom-data's 693_UNCI.dcm (benchmarks/dicom_series.py: 512 x 512 int16 CT, shuffled
file names). Three readers, timed in the same process with interleaved repeats (the order rotates every repeat)
and reported as medians; the files sit in the page cache, so the figures are CPU cost, not disk speed:
- medsight ``read_dicom(folder)``;
- SimpleITK ``ImageSeriesReader`` with ``GetGDCMSeriesFileNames`` (its own sort) and ``Execute``;
- a plain pydicom loop: ``dcmread`` every file, sort along the slice normal, ``np.stack`` of ``pixel_array``,
  rescale (integer add when the slope is 1).
Peak memory: each reader runs once more in a fresh child process; the figure is the child's peak RSS minus its
RSS just before reading (libraries already imported), so C++ allocations (SimpleITK/GDCM) count too.

    nice -n 10 .venv/bin/python benchmarks/bench_io.py --slices 200 500 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import machine_line, median, record_section  # noqa: E402
from dicom_series import write_series  # noqa: E402

READERS = ("medsight", "simpleitk", "pydicom")
_ALIVE: list = []


def read_medsight(folder: Path) -> tuple[np.ndarray, tuple, tuple]:
    from medsight.io.dicom import read_dicom

    img = read_dicom(folder)
    return img.array, img.geometry.spacing, img.geometry.origin


def read_simpleitk(folder: Path) -> tuple[np.ndarray, tuple, tuple]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    _ALIVE[:] = [image]  # the array view below is valid only while the SimpleITK image lives
    return sitk.GetArrayViewFromImage(image).transpose(2, 1, 0), image.GetSpacing(), image.GetOrigin()


def read_pydicom(folder: Path) -> tuple[np.ndarray, tuple, tuple]:
    import pydicom

    dss = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), normal)))
    vol = np.stack([d.pixel_array for d in dss])
    slope, inter = float(dss[0].get("RescaleSlope", 1)), float(dss[0].get("RescaleIntercept", 0))
    if slope == 1 and inter == int(inter):
        vol += np.int16(inter)
    else:
        vol = vol.astype(np.float32) * np.float32(slope) + np.float32(inter)
    along = [float(np.dot(np.array(d.ImagePositionPatient, dtype=float), normal)) for d in dss[:2]]
    sp = [float(v) for v in dss[0].PixelSpacing]
    return vol.transpose(2, 1, 0), (sp[1], sp[0], along[1] - along[0]), tuple(float(v) for v in
                                                                               dss[0].ImagePositionPatient)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(reader: str, folder: str) -> None:
    """Run one reader once after importing everything, print peak RSS growth (MiB) and the volume size."""
    import importlib

    for lib in ("pydicom", "pydicom.pixels", "SimpleITK", "imagecodecs", "openjpeg", "rle", "medsight.io.dicom"):
        importlib.import_module(lib)  # codec libraries loaded before the baseline, for every reader alike

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    arr, _, _ = {"medsight": read_medsight, "simpleitk": read_simpleitk, "pydicom": read_pydicom}[reader](
        Path(folder))
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - before) / 1024, "volume_mib": arr.nbytes / 2**20}))


def peak_memory(reader: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", reader, str(folder)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_same(results: dict) -> str:
    """Voxels, spacing and origin of every reader equal medsight's; returns a one-line summary."""
    ref_arr, ref_sp, ref_org = results["medsight"]
    for name, (arr, sp, org) in results.items():
        if not np.array_equal(np.asarray(arr), ref_arr):
            raise SystemExit(f"{name}: voxels differ from medsight's")
        if not (np.allclose(sp, ref_sp, atol=1e-4) and np.allclose(org, ref_org, atol=1e-4)):
            raise SystemExit(f"{name}: spacing/origin {sp} {org} differ from medsight's {ref_sp} {ref_org}")
    return "identical voxels, spacing and origin for all three readers"


def bench(folder: Path, repeats: int) -> dict:
    funcs = {"medsight": read_medsight, "simpleitk": read_simpleitk, "pydicom": read_pydicom}
    times: dict[str, list[float]] = {r: [] for r in READERS}
    cpu: dict[str, list[float]] = {r: [] for r in READERS}
    results = {r: funcs[r](folder) for r in READERS}  # warm-up (imports, page cache) and the equality check
    same = check_same(results)
    del results
    for rep in range(repeats):
        order = READERS[rep % 3:] + READERS[:rep % 3]
        for r in order:
            t, c = time.perf_counter(), time.process_time()
            out = funcs[r](folder)
            times[r].append(time.perf_counter() - t)
            cpu[r].append(time.process_time() - c)  # all threads of the process (ITK's and ours)
            del out
    mem = {r: peak_memory(r, folder) for r in READERS}
    return {"times": times, "cpu": cpu, "same": same, "mem": mem}


def _import_ms(args: list[str]) -> float:
    """Self-reported import time of a command (sum of the top-level entries of ``python -X importtime``), ms."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", _CLI, *args], capture_output=True,
                         text=True).stderr
    total = 0
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  ") and cumulative.strip().isdigit():
                total += int(cumulative)
    return total / 1000


_CLI = "import sys\nfrom medsight.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass"


def startup(files: dict[str, Path], repeats: int) -> list[tuple[str, float, float, float]]:
    """(command, median wall s, median wall s of a bare interpreter, median import ms) per command."""
    cmds = {"medsight --help": ["--help"]}
    cmds.update({f"medsight info ({kind})": ["-q", "info", "--json", str(p)] for kind, p in files.items()})
    wall: dict[str, list[float]] = {c: [] for c in cmds}
    bare: list[float] = []
    imp: dict[str, list[float]] = {c: [] for c in cmds}
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t)
        for c, a in cmds.items():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", _CLI, *a], check=True, capture_output=True)
            wall[c].append(time.perf_counter() - t)
            imp[c].append(_import_ms(a))
    return [(c, median(wall[c]), median(bare), median(imp[c])) for c in cmds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, nargs="+", default=[200, 500])
    ap.add_argument("--syntaxes", nargs="+", default=["uncompressed", "jpeg2000", "rle"])
    ap.add_argument("--compressed-slices", type=int, default=200, help="slices of the compressed series")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", nargs=2, metavar=("READER", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--only-startup", action="store_true", help="re-record only the start-up table")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.only_startup:
        rerecord_startup(args.repeats)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for syntax in args.syntaxes:
            for n in (args.slices if syntax == "uncompressed" else [args.compressed_slices]):
                folder = Path(tmp) / f"{syntax}_{n}"
                write_series(folder, n, syntax, variants=None if syntax == "uncompressed" else 16)
                res = bench(folder, args.repeats)
                med = {r: median(res["times"][r]) for r in READERS}
                rows.append((syntax, n, med, res))
                print(f"{syntax} {n}: " + ", ".join(f"{r} {med[r]:.3f} s (CPU {median(res['cpu'][r]):.3f} s)"
                                                    for r in READERS)
                      + f"; {res['same']}; peak MiB " + ", ".join(f"{r} {res['mem'][r]['peak_mib']:.0f}"
                                                                  for r in READERS), flush=True)
                for p in folder.iterdir():
                    p.unlink()
        start = startup(_startup_files(Path(tmp)), args.repeats)
        for c, w, b, i in start:
            print(f"{c}: {w:.3f} s wall (bare interpreter {b:.3f} s), imports {i:.0f} ms", flush=True)
    if not args.no_record:
        record_section("io", _markdown(rows, args, start))


def _markdown(rows: list, args: argparse.Namespace, start: list) -> str:
    lines = [
        "## io: DICOM series reading, medsight vs SimpleITK vs a pydicom loop",
        "",
        machine_line() + " The machine was shared with other engineers' jobs (2 cores, loaded): absolute times "
        "are noisy (SimpleITK's multi-threaded reader suffers most), the ratios come from interleaved repeats in one "
        "process; CPU time (all threads of the process) is the steadier figure.",
        "",
        f"Command: `nice -n 10 .venv/bin/python benchmarks/bench_io.py --slices {' '.join(map(str, args.slices))} "
        f"--compressed-slices {args.compressed_slices} --repeats {args.repeats}`",
        "",
        "Series generated from pydicom-data's 693_UNCI.dcm (512x512 int16 CT, 1.25 mm apart, shuffled file names; "
        "compressed series reuse 16 encoded planes). Time to read the whole series into an array with its geometry "
        "(wall and CPU), "
        f"median of n={args.repeats} interleaved repeats, files in the page cache. Peak memory: peak RSS growth of "
        "a fresh process reading the series once (libraries imported before), in MiB and as a multiple of the "
        "volume's size.",
        "",
        "| series | slices | medsight wall / CPU (s) | SimpleITK wall / CPU (s) | pydicom loop wall / CPU (s) | "
        "SimpleITK / medsight, wall (CPU) | pydicom / medsight, wall (CPU) | "
        "peak memory medsight / SimpleITK / pydicom (x volume) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for syntax, n, med, res in rows:
        vol = res["mem"]["medsight"]["volume_mib"]
        mem = " / ".join(f"{res['mem'][r]['peak_mib']:.0f} MiB ({res['mem'][r]['peak_mib'] / vol:.2f}x)"
                         for r in READERS)
        cpu = {r: median(res["cpu"][r]) for r in READERS}
        lines.append(f"| {syntax} | {n} | " + " | ".join(f"{med[r]:.3f} / {cpu[r]:.3f}" for r in READERS)
                     + f" | **{med['simpleitk'] / med['medsight']:.2f}x** ({cpu['simpleitk'] / cpu['medsight']:.2f}x)"
                     f" | {med['pydicom'] / med['medsight']:.2f}x ({cpu['pydicom'] / cpu['medsight']:.2f}x) | {mem} |")
    lines += ["", "Every run checked: " + rows[0][3]["same"] + " (voxels equal element by element; spacing and "
              "origin to 1e-4 mm).", ""]
    for syntax, n, _, res in rows:
        lines.append(f"- runs {syntax} {n} (s): " + "; ".join(
            f"{r} " + ", ".join(f"{t:.3f}" for t in res["times"][r]) for r in READERS))
    return "\n".join(lines) + "\n\n" + _startup_markdown(start, args.repeats)


def _startup_markdown(start: list, repeats: int) -> str:
    lines = ["### Start-up (`medsight --help`, `medsight info FILE`)", "",
             f"Each command in a fresh interpreter, median of n={repeats}; 'imports' is the sum of the "
             "top-level entries of `python -X importtime` (everything the command imports, medsight included), "
             "'overhead' the wall time minus a bare `python -c pass`. No command here imports torch, MONAI, "
             "SimpleITK, pandas or matplotlib (tests/cli/test_startup.py). `--only-startup` re-records this table "
             f"alone (`nice -n 10 .venv/bin/python benchmarks/bench_io.py --only-startup --repeats {repeats}`).", "",
             "| command | wall (s) | overhead over a bare interpreter (s) | imports (ms) |", "|---|---|---|---|"]
    lines += [f"| `{c}` | {w:.3f} | {w - b:.3f} | {i:.0f} |" for c, w, b, i in start]
    return "\n".join(lines)


def _startup_files(tmp: Path) -> dict[str, Path]:
    from medsight.image import Geometry, Image
    from medsight.io.nifti import write_nifti

    files = {"one CT slice, DICOM": write_series(tmp / "one", 1)[0]}
    files["NIfTI"] = write_nifti(Image(np.zeros((64, 64, 32), np.int16), Geometry.identity(3)), tmp / "a.nii.gz")
    return files


def rerecord_startup(repeats: int) -> None:
    """Measure start-up only and replace the start-up table inside the recorded io section."""
    from _record import DOC

    with tempfile.TemporaryDirectory() as tmp:
        start = startup(_startup_files(Path(tmp)), repeats)
    text = DOC.read_text()
    section = text.split("<!-- BEGIN io -->", 1)[1].split("<!-- END io -->", 1)[0]
    head = section.split("### Start-up", 1)[0].rstrip()
    record_section("io", head + "\n\n" + _startup_markdown(start, repeats))


if __name__ == "__main__":
    main()
