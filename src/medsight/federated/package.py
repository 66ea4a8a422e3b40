"""The federated model as a medsight package: weights plus the run's record of sites, rounds and hashes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medsight.package.package import Package, save_package


def federation_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the package manifest records: sites, rounds, per-round per-site metrics, every aggregate's SHA-256."""
    rounds = result["rounds"]
    sites = sorted({s for r in rounds for s in (*r["train"], *r["evaluate"], *r.get("no_reply", []))})
    return {"strategy": result["strategy"], "sites": sites, "rounds": len(rounds),
            "per_round": [{"round": r["round"], "contributors": r["contributors"], "global": r.get("global", {}),
                           "sites": r["evaluate"], "aggregate_sha256": r["aggregate_sha256"]} for r in rounds],
            "aggregate_sha256": [r["aggregate_sha256"] for r in rounds],
            "contributing_sites": sorted({s for r in rounds for s in r["contributors"]}),
            "dp": {k: result["config"][k] for k in ("dp-noise", "dp-clip", "dp-delta", "dp-epsilon")},
            "model": {k: result["config"].get(k, d) for k, d in (("backbone", "small"), ("image-size", 32),
                                                                   ("label", ""))}}


def package_federation(out_dir: str | Path, dest: str | Path, name: str, *, register: bool = True,
                       registry_url: str | None = None) -> Package:
    """Package ``out_dir``'s model.pt and federation.json (written by the ServerApp) into ``dest``."""
    out_dir = Path(out_dir)
    result = json.loads((out_dir / "federation.json").read_text())
    summary = federation_summary(result)
    with tempfile.TemporaryDirectory(prefix="medsight-fedpkg-") as tmp:
        for f in ("model.pt", "federation.json"):
            shutil.copy(out_dir / f, Path(tmp) / f)
        final = summary["per_round"][-1]["global"]
        return save_package(tmp, dest, task="classification", name=name, register=register,
                            registry_url=registry_url,
                            extra={"federated": summary, "metrics": {f"federated_{k}": v for k, v in final.items()}})
