"""The ServerApp: FedAvg / FedProx rounds over Flower's Grid, per-site evidence, an aggregate hash per round.

The server holds weights and metrics only. Each round it sends the global model to every connected site,
aggregates the replies that came back in time (weighted by training examples), hashes the aggregate and then
asks every site to evaluate the new global model on its held-out cases. A site that drops (process killed,
network lost) simply has no reply: the round goes on when at least ``min-sites`` replied, else the global
model is kept and the round is recorded as skipped.

Before round 1 every site is asked its pre-flight (federated/preflight.py): a site that cannot train is named with
its reason and left out; with fewer than ``min-sites`` passing, the run ends there (``status: preflight_failed``)
and no model is written. The initial model is evaluated by every site (``initial``), so a federation that did not
learn can be told from one that did (federated/package.py refuses to package it). A site that refuses a round (its
privacy policy or budget) says why; the record keeps each refusal, and each site's last reported eps and delta.
No round aggregated: no model file is written, since no site trained it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from medsight.engine.seeding import seed_everything
from medsight.federated.aggregate import aggregate_hash, fedavg
from medsight.federated.secagg import error_bound, secagg_round
from medsight.federated.tasks import global_model
from medsight.files import atomic_write_text

log = logging.getLogger(__name__)
app = ServerApp()


def _wait_for_sites(grid: Grid, n: int, timeout: float) -> list[int]:
    end = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= n or time.monotonic() > end:
            return nodes
        time.sleep(0.5)


def _send(grid: Grid, nodes: list[int], content: RecordDict, kind: str, timeout: float) -> list[Message]:
    msgs = [Message(content=content, dst_node_id=n, message_type=kind) for n in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    ok = [r for r in replies if not r.has_error()]
    for r in replies:
        if r.has_error():
            log.warning("site reply error (%s): %s", r.metadata.src_node_id, r.error.reason)
    return ok


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    out = Path(str(rc["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    rounds, min_sites, timeout = int(rc["rounds"]), int(rc["min-sites"]), float(rc["round-timeout"])
    strategy, secagg = str(rc["strategy"]), bool(rc.get("secagg", False))
    seed_everything(int(rc["seed"]))
    model = global_model(rc)
    glob = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_cfg = {"local-steps": int(rc["local-steps"]), "seed": int(rc["seed"]),
                 "proximal-mu": float(rc["proximal-mu"]) if strategy == "fedprox" else 0.0,
                 "dp-noise": float(rc["dp-noise"]), "dp-clip": float(rc["dp-clip"]),
                 "dp-delta": float(rc["dp-delta"]), "dp-epsilon": float(rc["dp-epsilon"]),
                 "dp-mode": str(rc.get("dp-mode", "client")),
                 "secagg-max-weight": float(rc.get("secagg-max-weight", 1000.0)),
                 "secagg-clip-range": float(rc.get("secagg-clip-range", 8.0))}
    history: list[dict[str, Any]] = []
    names: dict[int, str] = {}  # node id -> site name, learnt from replies
    progress = out / "progress.jsonl"
    summary: dict[str, Any] = {"strategy": strategy, "config": {k: rc[k] for k in rc}}
    first = _wait_for_sites(grid, min_sites, timeout)
    passed, failed = _preflight(grid, first, timeout, names)
    checked = set(first)
    _note(progress, {"round": 0, "phase": "preflight", "passed": len(passed)})
    summary["preflight"] = failed
    if len(passed) < min_sites:
        log.warning("pre-flight: %d of %d required sites passed; nothing trained", len(passed), min_sites)
        atomic_write_text(out / "federation.json", json.dumps({**summary, "status": "preflight_failed",
                                                                "rounds": []}, indent=1))
        return
    ok = set(passed)
    ev = _send(grid, passed, RecordDict({"arrays": ArrayRecord(glob), "config": ConfigRecord({"server-round": 0})}),
               MessageType.EVALUATE, timeout)
    initial = {_site(r): {k: float(v) for k, v in r.content["metrics"].items()} for r in ev}
    summary["initial"] = {"evaluate": initial, "global": _pooled(initial)}
    for rnd in range(1, rounds + 1):
        t0 = time.perf_counter()
        nodes = _wait_for_sites(grid, min_sites, timeout)
        late = [n for n in nodes if n not in checked]  # a site that connected after the first pre-flight
        if late:
            more, why = _preflight(grid, late, timeout, names)
            ok.update(more)
            failed.update(why)
            checked.update(late)
        nodes = [n for n in nodes if n in ok]
        _note(progress, {"round": rnd, "phase": "train", "sites": len(nodes)})
        if secagg:
            record, new = _secagg_train(grid, nodes, glob, {**train_cfg, "server-round": rnd}, rc, names, min_sites)
        else:
            record, new = _plain_train(grid, nodes, glob, {**train_cfg, "server-round": rnd}, timeout, names,
                                       min_sites)
        record = {"round": rnd, **record}
        if new is not None:
            glob = new
            record.update({"aggregated": True, "aggregate_sha256": aggregate_hash(glob)})
        else:
            log.warning("round %d: %d of %d required sites contributed; global model kept", rnd,
                        len(record["contributors"]), min_sites)
            record.update({"aggregated": False, "aggregate_sha256": None})
        _note(progress, {"round": rnd, "phase": "evaluate"})
        ev = _send(grid, [n for n in grid.get_node_ids() if n in ok], RecordDict({"arrays": ArrayRecord(glob),
                   "config": ConfigRecord({"server-round": rnd})}), MessageType.EVALUATE, timeout)
        record["evaluate"] = {_site(r): {k: float(v) for k, v in r.content["metrics"].items()} for r in ev}
        record["global"] = _pooled(record["evaluate"])
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        _note(progress, {"round": rnd, "phase": "done"})
    trained = any(r["aggregated"] for r in history)
    if trained:  # the initial weights are no site's model
        torch.save(glob, out / "model.pt")
    summary.update({"status": "trained" if trained else "no_round_aggregated", "rounds": history,
                   "refusals": [{"round": r["round"], "site": s, "reason": why}
                                for r in history for s, why in sorted(r.get("refused", {}).items())],
                   "privacy": _ledgers(history)})
    atomic_write_text(out / "federation.json", json.dumps(summary, indent=1))


def _preflight(grid: Grid, nodes: list[int], timeout: float, names: dict[int, str]
               ) -> tuple[list[int], dict[str, str]]:
    """Ask every site whether it can train: (the node ids that passed, site -> reason for those that did not).
    A site that does not answer in time fails with that reason."""
    replies = _send(grid, nodes, RecordDict({"config": ConfigRecord({"preflight": True})}), MessageType.QUERY,
                    timeout)
    names.update({r.metadata.src_node_id: _site(r) for r in replies})
    failed = {_site(r): str(r.content["info"]["preflight"]) for r in replies if str(r.content["info"]["preflight"])}
    replied = {r.metadata.src_node_id for r in replies}
    failed.update({f"node-{n}": "no pre-flight answer within the round timeout" for n in nodes if n not in replied})
    passed = [r.metadata.src_node_id for r in replies if not str(r.content["info"]["preflight"])]
    for site, why in failed.items():
        log.warning("site %s fails pre-flight: %s", site, why)
    return passed, failed


def _ledgers(history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each site's last reported spend: eps (the site's accountant), delta, eps by Mironov 2017, the round."""
    out: dict[str, dict[str, float]] = {}
    for r in history:
        for site, m in r["train"].items():
            if "epsilon" in m:
                out[site] = {k: m[k] for k in ("epsilon", "delta", "epsilon-mironov") if k in m} | {"round": r["round"]}
    return out


def _plain_train(grid: Grid, nodes: list[int], glob: dict[str, torch.Tensor], cfg: dict[str, Any],
                 timeout: float, names: dict[int, str], min_sites: int
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Send the global model, FedAvg the replies that came back in time: (the round's record, aggregate|None)."""
    content = RecordDict({"arrays": ArrayRecord(glob), "config": ConfigRecord(cfg)})
    replies = _send(grid, nodes, content, MessageType.TRAIN, timeout)
    contrib = [r for r in replies if "arrays" in r.content and int(r.content["metrics"]["num-examples"]) > 0]
    names.update({r.metadata.src_node_id: _site(r) for r in replies})
    replied = {r.metadata.src_node_id for r in replies}
    record: dict[str, Any] = {
        "sites_asked": len(nodes), "secagg": False,
        "train": {_site(r): {k: float(v) for k, v in r.content["metrics"].items()} for r in replies},
        "refused": {_site(r): str(r.content["info"]["refused"]) for r in replies
                    if "info" in r.content and "refused" in r.content["info"]},
        "contributors": sorted(_site(r) for r in contrib),
        "no_reply": sorted(names.get(n, f"node-{n}") for n in nodes if n not in replied),
        "bytes_sent": ArrayRecord(glob).count_bytes() * len(nodes),
        "bytes_received": sum(r.content["arrays"].count_bytes() for r in contrib)}
    if len(contrib) < min_sites:
        return record, None
    return record, fedavg([r.content["arrays"].to_torch_state_dict() for r in contrib],
                          [int(r.content["metrics"]["num-examples"]) for r in contrib])


def _secagg_train(grid: Grid, nodes: list[int], glob: dict[str, torch.Tensor], cfg: dict[str, Any],
                  rc: Any, names: dict[int, str], min_sites: int
                  ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """The same round under SecAgg+: the server sees each site's metrics but only the sum of their weights."""
    replies, agg = secagg_round(grid, nodes, glob, cfg, float(rc["round-timeout"]), min_sites,
                                float(cfg["secagg-max-weight"]), float(cfg["secagg-clip-range"]))
    site = {n: str(r.metrics.get("site", n)) for n, r in replies.items()}
    names.update(site)
    train = {site[n]: {k: float(v) for k, v in r.metrics.items() if k not in ("site", "refused")}
             for n, r in replies.items()}
    refused = {site[n]: str(r.metrics["refused"]) for n, r in replies.items() if "refused" in r.metrics}
    contrib = sorted(site[n] for n, r in replies.items() if r.num_examples > 0)
    n_ex = [r.num_examples for r in replies.values() if r.num_examples > 0]
    return {"sites_asked": len(nodes), "secagg": True, "train": train, "refused": refused, "contributors": contrib,
            "no_reply": sorted(names.get(n, f"node-{n}") for n in nodes if n not in replies),
            "secagg_error_bound": error_bound(n_ex, float(cfg["secagg-max-weight"]),
                                              float(cfg["secagg-clip-range"])),
            "bytes_sent": None, "bytes_received": None}, agg


def _site(r: Message) -> str:
    return str(r.content["info"]["site"]) if "info" in r.content else str(r.metadata.src_node_id)


def _pooled(per_site: dict[str, dict[str, float]]) -> dict[str, float]:
    """Case-weighted mean over sites of each held-out metric (the global model's federated evaluation)."""
    n = sum(m.get("n", 0.0) for m in per_site.values())
    if not n:
        return {}
    keys = sorted({k for m in per_site.values() for k in m} - {"n"})
    out: dict[str, float] = {}
    for k in keys:  # a site without a finite value (e.g. no lesion held out) does not count for that metric
        have = [m for m in per_site.values() if math.isfinite(m.get(k, math.nan)) and m.get("n", 0)]
        w = sum(m["n"] for m in have)
        out[k] = float(sum(m[k] * m["n"] for m in have) / w) if w else math.nan
    return out | {"n": n}


def _note(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
