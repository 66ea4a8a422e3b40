"""Load test of the triage service on loopback: concurrent clients submit small real CT studies to a small model.

Measures jobs lost / duplicated (must be 0), submit latency (p50/p95), end-to-end throughput (studies/s, from the
first submit to the last job done), and compares it with the same model run in one process over the same studies
(`Predictor` + the same DICOM SEG/SR writing, and plain `medsight predict`-style NIfTI output). Bounded: N studies,
C clients, one server on 127.0.0.1, stopped at the end.

    python benchmarks/bench_service.py --studies 200 --clients 8 --workers 1
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402


def _series(src_file: Path, out: Path, n_slices: int, tag: str) -> Path:
    import pydicom

    src = pydicom.dcmread(src_file)
    out.mkdir(parents=True)
    study, series = (pydicom.uid.generate_uid(entropy_srcs=[tag, k]) for k in ("study", "series"))
    for i in range(n_slices):
        ds = copy.deepcopy(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[tag, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ipp = [float(v) for v in src.ImagePositionPatient]
        ipp[2] += 5.0 * i
        ds.ImagePositionPatient, ds.InstanceNumber = ipp, i + 1
        ds.save_as(out / f"{i:02d}.dcm", enforce_file_format=True)
    return out


def _toy_package(work: Path) -> Path:
    from click.testing import CliRunner

    from medsight.cli.main import cli
    from medsight.package import load_package, save_package
    from medsight.package.registry import Registry
    from medsight.synthetic.toy import make_toy_dataset

    root = make_toy_dataset(work / "Dataset001_Toy", n_cases=10, shape=(24, 20, 16), channels=1)
    r = CliRunner()
    assert r.invoke(cli, ["-q", "plan", str(root), "--memory-gb", "0.05", "--filters", "8", "--epochs", "2",
                          "--iterations", "4"]).exit_code == 0
    assert r.invoke(cli, ["-q", "train", str(root), "--fold", "0", "--model-dir", str(work / "model")]).exit_code == 0
    if (work / "model" / "manifest.json").exists():
        pkg = load_package(work / "model")
    else:
        pkg = save_package(work / "model", work / "package", task="segmentation", name="bench-seg")
    rec = Registry().find_id(pkg.id)  # the service serves approved versions only
    if rec.status == "candidate":
        Registry().set_status(rec.name, rec.version, "approved")
    return pkg.path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, tries: int = 600) -> None:
    """Wait until the service answers /healthz (it imports torch and opens its store first)."""
    import httpx

    for _ in range(tries):
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)


def in_process(package: Path, studies: list[Path], out: Path, dicom: bool) -> float:
    """Seconds to run every study through the model in one process (model loaded once)."""
    from medsight.serve.models import resolve_models
    from medsight.serve.runner import run_job

    model = resolve_models([str(package)])[0]
    t0 = time.perf_counter()
    if dicom:
        for i, s in enumerate(studies):
            run_job(model, s, out / f"r{i}", uid_seed=f"bench{i}", tta=False)
    else:
        from medsight.io.dicom import read_dicom
        from medsight.segmentation.predict import Predictor, write_prediction

        pred = Predictor(package, mirror=False)
        for i, s in enumerate(studies):
            write_prediction(pred.predict(read_dicom(s)), out / f"p{i}.nii.gz")
    return time.perf_counter() - t0


def _kill_one_worker(url: str, h: dict, ids: list[str]) -> int | None:
    """Once a third of the jobs are done, SIGKILL one worker (pid from /healthz); its job must not be lost."""
    import httpx

    while True:
        rows = httpx.get(f"{url}/api/v1/worklist", headers=h, timeout=60).json()
        if sum(r["status"] == "done" for r in rows) >= len(ids) // 3:
            break
        time.sleep(0.2)
    workers = httpx.get(f"{url}/healthz", timeout=10).json()["workers"]
    pid = next((w["pid"] for w in workers if w["alive"]), None)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    return pid


def service(package: Path, studies: list[Path], work: Path, clients: int, workers: int, kill: bool = False) -> dict:
    import httpx

    home, port = work / "home", _port()
    home.mkdir(parents=True)
    env = {**os.environ, "MEDSIGHT_AUDIT_URL": f"sqlite:///{work / 'audit.sqlite'}"}
    token = subprocess.run([sys.executable, "-m", "medsight.cli.main", "users", "add", "bench", "--role", "admin",
                            "--home", str(home)], capture_output=True, text=True, check=True, env=env).stdout.strip()
    server = subprocess.Popen([sys.executable, "-m", "medsight.cli.main", "serve", "--home", str(home), "--port",
                               str(port), "--model", str(package), "--workers", str(workers), "--no-tta"], env=env,
                              start_new_session=True)
    url, h = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    try:
        wait_up(url)
        payloads = [[("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(s.iterdir())]
                    for s in studies]

        def submit(files):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            r = httpx.post(f"{url}/api/v1/studies", files=files, headers=h, timeout=120)
            r.raise_for_status()
            return r.json()["job_id"], time.perf_counter() - t

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            submitted = list(pool.map(submit, payloads))
        ids = [i for i, _ in submitted]
        killed = _kill_one_worker(url, h, ids) if kill else None
        deadline = time.time() + 3600
        while time.time() < deadline:
            rows = httpx.get(f"{url}/api/v1/worklist", headers=h, timeout=60).json()
            if sum(r["status"] in ("done", "failed", "unsupported") for r in rows) >= len(ids):
                break
            time.sleep(0.5)
        total = time.perf_counter() - t0
        rows = httpx.get(f"{url}/api/v1/worklist", headers=h, timeout=60).json()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    from medsight.audit.log import AuditLog

    done_events = [r.details["job_id"] for r in AuditLog(env["MEDSIGHT_AUDIT_URL"]).records()
                   if r.event == "job_done"]
    lat = sorted(x for _, x in submitted)
    return {"seconds": total, "killed": killed, "lost": len(set(ids) - {r["job_id"] for r in rows if r["status"] == "done"}),
            "failed": sum(r["status"] == "failed" for r in rows),
            "duplicated": len(done_events) - len(set(done_events)),
            "p50": statistics.median(lat), "p95": lat[int(0.95 * (len(lat) - 1))]}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="one service run per count, same studies")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--kill-worker", action="store_true", help="SIGKILL one worker a third of the way through")
    ap.add_argument("--nifti", action="store_true", help="also time `medsight predict`-style NIfTI output")
    ap.add_argument("--baseline-studies", type=int, default=None,
                    help="time the one-process baseline on the first N studies only (a rate; default: all)")
    ap.add_argument("--record", action="store_true", help="write the section of docs/benchmarks.md")
    args = ap.parse_args()
    from pydicom.data import data_manager

    src = Path(data_manager.DATA_ROOT) / "test_files" / "CT_small.dcm"
    work = Path(tempfile.mkdtemp(prefix="medsight-bench-service-"))
    runs, loads = {}, {}
    try:
        package = _toy_package(work / "model")
        studies = [_series(src, work / "studies" / f"s{i:04d}", args.slices, f"bench-{i}") for i in range(args.studies)]
        (work / "inproc").mkdir()
        (work / "inproc_nii").mkdir()
        loads["one process"] = _load()
        base = studies[:args.baseline_studies or len(studies)]
        t_nii = in_process(package, base, work / "inproc_nii", dicom=False) if args.nifti else None
        t_dcm = in_process(package, base, work / "inproc", dicom=True)
        loads["one process"] += " -> " + _load()
        for w in args.workers:  # the table is written after each run: a long run interrupted keeps the others
            loads[w] = _load()
            runs[w] = service(package, studies, work / f"svc{w}", args.clients, w, args.kill_worker)
            loads[w] += " -> " + _load()
            _report(args, len(base), t_dcm, t_nii, runs, loads)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(args: argparse.Namespace, n_base: int, t_dcm: float, t_nii: float | None, runs: dict, loads: dict
            ) -> None:
    n = args.studies
    workers = " ".join(map(str, args.workers))
    done = " and ".join(map(str, runs)) + ("" if len(runs) == len(args.workers) else
                                            f" (of {' and '.join(map(str, args.workers))}: the rest did not finish)")
    lines = [
        "## Triage service load test (loopback)" if args.workers == [1] else
        f"## Triage service load test: {n} studies, {done} supervised workers"
        + (", one killed mid-run" if args.kill_worker else "") + " (loopback)",
        "",
        machine_line() + " Shared machine (other sessions' jobs running): the 1/5/15-min load average (`uptime`) is "
        "given at the start and end of each phase; the phases ran back to back in one invocation.",
        "",
        f"Command: `python benchmarks/bench_service.py --studies {n} --clients {args.clients} --workers {workers}"
        f"{' --kill-worker' if args.kill_worker else ''}{' --nifti' if args.nifti else ''}"
        f"{f' --baseline-studies {n_base}' if n_base != n else ''} --record`. Studies: {n} CT "
        f"studies of {args.slices} slices (128x128, built from pydicom's real CT_small.dcm, distinct UIDs); model: a "
        "toy 3D DynUNet package (8 filters), no test-time mirroring on either side; unit: study; latency: one "
        f"upload's POST, {args.clients} concurrent clients.",
        "",
        "| run | load avg start -> end | lost / failed / duplicated (n) | worker killed | submit p50 / p95 (s) "
        "| throughput (studies/s) | vs one process |",
        "|---|---|---|---|---|---|---|",
        f"| one process (n = {n_base}), same SEG/SR/thumbnail output | {loads['one process']} | - | - | - "
        f"| {n_base / t_dcm:.3f} | 1.00x |",
    ]
    if t_nii is not None:
        lines.append(f"| one process, NIfTI output only | - | - | - | - | {n_base / t_nii:.3f} "
                     f"| {t_dcm / t_nii:.2f}x |")
    for w, svc in runs.items():
        rate = n / svc["seconds"]
        lines.append(f"| service, {w} worker{'s' if w > 1 else ''} | {loads[w]} | {svc['lost']} / {svc['failed']} / "
                     f"{svc['duplicated']} ({n}) | {'yes (pid ' + str(svc['killed']) + ')' if svc['killed'] else 'no'}"
                     f" | {svc['p50']:.3f} / {svc['p95']:.3f} | {rate:.3f} | {rate / (n_base / t_dcm):.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("service-load" if args.workers == [1] else "service-load-2w", text)


if __name__ == "__main__":
    main()
