"""Server memory over a long federated run: does the SuperLink or the ServerApp grow round after round?

A real local federation (SuperLink + 2 SuperNodes on 127.0.0.1, medsight's ServerApp/ClientApp) runs many tiny
rounds; after each round ends (the ServerApp's ``progress.jsonl`` says ``done``) the resident set size (VmRSS in
/proc, psutil is not needed) of the SuperLink and of every process under it (the ServerApp's) is sampled. A leak
shows as a positive slope after warm-up; the report gives RSS at round 1, 10 and the last, the peak (VmHWM) and
the least-squares slope over rounds 2..last and 10..last.

    OMP_NUM_THREADS=1 python benchmarks/bench_federated_memory.py --rounds 40 --record
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, record_section  # noqa: E402

from medsight.federated.launch import Federation, wait_result  # noqa: E402
from medsight.federated.toy import make_sites  # noqa: E402


def _status_kib(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren...), from /proc/*/stat's parent field."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def sample(superlink: int) -> dict[str, float]:
    """RSS (MiB) of the SuperLink, of the ServerApp process(es) under it, and of the whole tree."""
    kids = descendants(superlink)
    server = [p for p in kids if "serverapp" in _cmd(p)]
    mib = lambda pids, key="VmRSS": sum(_status_kib(p, key) for p in pids) / 1024  # noqa: E731
    return {"superlink": mib([superlink]), "serverapp": mib(server), "tree": mib([superlink, *kids]),
            "superlink_hwm": mib([superlink], "VmHWM"), "serverapp_hwm": mib(server, "VmHWM")}


def slope(rounds: list[int], values: list[float]) -> float:
    """Least-squares MiB per round."""
    return float(np.polyfit(np.asarray(rounds, float), np.asarray(values, float), 1)[0])


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def figures(samples: list[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """RSS at round 1, 10 and the last, slopes over rounds 2..last and 10..last, peaks."""
    rs = [int(s["round"]) for s in samples]
    fig: dict[str, dict[str, float | None]] = {}
    for key in ("superlink", "serverapp", "tree"):
        vals = [s[key] for s in samples]
        late = [(r, v) for r, v in zip(rs, vals) if r >= 10]
        at10 = [v for r, v in zip(rs, vals) if r >= 10]  # round 10, or the first sampled round after it
        fig[key] = {"r1": vals[0], "r10": at10[0] if at10 else None, "last": vals[-1],
                    "slope_2": slope(rs[1:], vals[1:]) if len(rs) > 2 else None,
                    "slope_10": slope([r for r, _ in late], [v for _, v in late]) if len(late) > 1 else None}
    fig["rounds"] = {"r10": next((float(r) for r in rs if r >= 10), None), "last": float(rs[-1]),
                     "n": float(len(rs))}
    fig["hwm"] = {"superlink": max(s["superlink_hwm"] for s in samples),
                  "serverapp": max(s["serverapp_hwm"] for s in samples)}
    return fig


def section(args: argparse.Namespace, samples: list[dict[str, float]], wall: float | None,
            before: dict[str, float] | None) -> str:
    """The docs/benchmarks.md section (``wall``/``before`` are None when written from a stopped run's log)."""
    fig = figures(samples)
    name = {"superlink": "SuperLink", "serverapp": "ServerApp process", "tree": "SuperLink + its children"}
    done = int(samples[-1]["round"])
    missing = sorted(set(range(1, done + 1)) - {int(s["round"]) for s in samples})
    stopped = "" if done >= args.rounds else (f" The run was stopped after round {done} of {args.rounds} (the "
                                              "machine was too loaded to finish in time); the figures cover those.")
    if missing:
        stopped += f" Rounds not sampled: {', '.join(map(str, missing))}."
    lines = ["## Federated server memory over a long run", "", machine_line(),
             f"{args.note} RSS does not depend on the machine's load; the wall time does.", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_federated_memory.py --rounds "
             f"{args.rounds} --n {args.n} --steps {args.steps} --record`. A real local federation (SuperLink + 2 "
             f"SuperNodes on 127.0.0.1, FedAvg, the small classifier, {args.n} images and {args.steps} local step(s) "
             f"per site per round), {done} rounds ({len(samples)} sampled)" + (f", wall {wall:.0f} s" if wall else "") + ". RSS (VmRSS "
             "from /proc) sampled when the ServerApp wrote a round's `done` line; slope = least-squares MiB per "
             f"round.{stopped}" + (" Figures written from that run's per-round log (`--from-log`)."
                                    if wall is None else ""), "",
             f"| process | RSS round 1 (MiB) | round {_f(fig['rounds']['r10'], '.0f')} | last round "
             f"({fig['rounds']['last']:.0f}) | slope rounds 2..last (MiB/round) | slope rounds 10..last |",
             "|---|---|---|---|---|---|"]
    for key in ("superlink", "serverapp", "tree"):
        f = fig[key]
        lines.append(f"| {name[key]} | {f['r1']:.1f} | {_f(f['r10'], '.1f')} | {f['last']:.1f} | "
                     f"{_f(f['slope_2'], '+.3f')} | {_f(f['slope_10'], '+.3f')} |")
    lines += ["", f"Peak RSS (VmHWM): SuperLink {fig['hwm']['superlink']:.1f} MiB, ServerApp "
              f"{fig['hwm']['serverapp']:.1f} MiB." + (f" Before the run the SuperLink held {before['superlink']:.1f} "
                                                       "MiB." if before else "")]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--n", type=int, default=20, help="images per site")
    ap.add_argument("--steps", type=int, default=1, help="local steps per round")
    ap.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    ap.add_argument("--note", default="", help="what else ran on the machine (written beside the figures)")
    ap.add_argument("--from-log", type=Path, default=None,
                    help="record from the per-round JSON lines an earlier (stopped) run printed, without running")
    args = ap.parse_args()
    if args.from_log:
        rows = [json.loads(x) for x in args.from_log.read_text().splitlines() if x.startswith('{"round"')]
        record_section("federated-memory", section(args, rows, None, None))
        print(json.dumps(figures(rows), indent=1))
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medsight-fedmem-") as tmp:
        tmp_p = Path(tmp)
        sites = make_sites(tmp_p / "data", n=args.n, sites=("A", "B"))
        out = tmp_p / "out"
        samples: list[dict[str, float]] = []
        with Federation(sites, tmp_p / "work", logs=out / "logs") as fed:
            sl = fed.procs["superlink"].pid
            before = sample(sl)
            run = fed.submit({"rounds": args.rounds, "local-steps": args.steps, "min-sites": 2,
                              "round-timeout": 120.0}, out)
            progress, seen = out / "progress.jsonl", 0
            while seen < args.rounds and run.poll() is None:
                done = [json.loads(x) for x in progress.read_text().splitlines()] if progress.exists() else []
                done = [d for d in done if d.get("phase") == "done"]
                for d in done[seen:]:
                    samples.append({"round": d["round"], **sample(sl)})
                    print(json.dumps(samples[-1]), flush=True)
                seen = len(done)
                time.sleep(0.2)
            wait_result(out, run, 300)
    wall = time.perf_counter() - t0
    print(json.dumps({"before": before, "figures": figures(samples), "wall_s": wall}, indent=1))
    if args.record:
        record_section("federated-memory", section(args, samples, wall, before))


if __name__ == "__main__":
    main()
