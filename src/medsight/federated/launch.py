"""Start a federation on this machine: SuperLink, one SuperNode per site, then ``flwr run`` of medsight's app.

Every piece is a separate process speaking Flower's protocol over 127.0.0.1, exactly the processes that run on
separate machines in production (docs/federated.md): the SuperLink (server side, no data), one SuperNode per
site (reads only its node config's manifest rows) and the ``flwr run`` client that submits the app. Nothing is
downloaded: runtime dependency installation is off and the app's code is medsight's installed package.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsight.errors import ConfigError, DatasetError, MedsightError

log = logging.getLogger(__name__)

RUN_DEFAULTS: dict[str, Any] = {"rounds": 2, "min-sites": 2, "local-steps": 5, "strategy": "fedavg",
                                "proximal-mu": 0.01, "round-timeout": 120.0, "seed": 0, "dp-noise": 0.0,
                                "dp-clip": 1.0, "dp-delta": 1e-5, "dp-epsilon": 10.0, "out-dir": "",
                                "secagg": False, "secagg-max-weight": 1000.0, "secagg-clip-range": 8.0,
                                "label": "", "backbone": "small", "image-size": 32, "batch-size": 16, "lr": 3e-3,
                                "balanced": False, "task": "classification", "plan": "", "configuration": "",
                                "feature-dim": 0, "dp-mode": "client", "min-site-rows": 4}
DP_MODES = ("client", "sample")
STRATEGIES = ("fedavg", "fedprox")


class FederationError(MedsightError):
    """A federation process failed to start or the run did not finish."""


class PreflightError(MedsightError):
    """Fewer sites than --min-sites can train (pre-flight, before round 1): nothing was trained or written."""


class NotTrainedError(MedsightError):
    """The run ended without any aggregated round (every site refused or dropped): there is no model."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise ConfigError(f"{name} is not installed; install Flower with: pip install 'medsight[federated]'")
    return found


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def write_app(folder: Path) -> Path:
    """A Flower app folder whose components are medsight's installed ServerApp and ClientApp."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = "\n".join(f"{k} = {_toml(v)}" for k, v in RUN_DEFAULTS.items())
    (folder / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "medsight-federated"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "medsight"

[tool.flwr.app.components]
serverapp = "medsight.federated.server:app"
clientapp = "medsight.federated.client:app"

[tool.flwr.app.config]
{conf}
""")
    return folder


def audit_location(audit: str) -> str:
    """A database URL as given; a file path made absolute (the SuperNodes run in other working folders)."""
    return audit if "://" in audit else str(Path(audit).resolve())


def check_site_data(site: str, data: Path) -> None:
    """Refuse, with one line, site data a SuperNode could never read: a folder that is not a segmentation dataset,
    a CSV that does not parse or has no rows, or one whose ``site`` column never names this site. What the run's
    task needs of the rows (classes, labels) is the run's pre-flight; this catches the typo when the site is set up."""
    from medsight.data.dataset import load_dataset
    from medsight.files import read_csv

    data = Path(data)
    if data.is_dir():
        load_dataset(data)
        return
    table = read_csv(data, "site data CSV (classification manifest or MIL label CSV)")
    if table.empty:
        raise DatasetError("the site data CSV has a header but no rows", data)
    if "site" in table.columns and site not in set(table["site"].astype(str).str.strip()):
        raise DatasetError(f"no row of its site column is {site!r}; use the site's name as written there", data)


def site_node_config(site: str, manifest: Path, audit: str | None = None, epsilon_budget: float | None = None,
                     features: Path | None = None, policy: dict[str, Any] | None = None) -> str:
    """The SuperNode's --node-config: the site's name and data (a manifest, a segmentation dataset folder or a
    MIL label CSV with its ``features`` folder), its privacy ledger (kept beside the data, so the budget holds
    across runs), its audit log, its own eps budget and the rest of its privacy policy (``policy``: node-config
    keys of federated/site_privacy.SitePolicy, e.g. dp-min-noise, dp-delta, dp-modes)."""
    manifest = Path(manifest).resolve()
    home = manifest if manifest.is_dir() else manifest.parent
    nc: dict[str, Any] = {"site": site, "manifest": str(manifest),
                          "ledger": str(home / f".medsight-privacy-{site}.json")}
    if features is not None:
        nc["features"] = str(Path(features).resolve())
    if audit:  # a relative SQLite file would land in the SuperNode's working folder (a temporary one locally)
        nc["audit"] = audit_location(audit)
    if epsilon_budget is not None:
        nc["epsilon-budget"] = float(epsilon_budget)
    nc.update(policy or {})
    return " ".join(f"{k}={_toml(v)}" for k, v in nc.items())


@dataclass
class Federation:
    """Processes of a local federation; use as a context manager (everything is stopped on exit)."""

    sites: dict[str, Path]  # site name -> manifest
    work: Path
    audit: str | None = None
    epsilon_budget: float | None = None
    port: int = 0
    logs: Path | None = None  # where the processes' logs go (default: work)
    features: dict[str, Path] | None = None  # MIL: site name -> its tile-features folder
    policy: dict[str, dict[str, Any]] | None = None  # site name -> its privacy policy (node-config keys)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.work = Path(self.work)
        self.logs = Path(self.logs or self.work)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.home = self.work / "flwr-home"
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "FLWR_DISABLE_UPDATE_CHECK": "1",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1",
                    # the SuperLink and SuperNodes start flower-superexec / the apps by name
                    "PATH": os.pathsep.join([str(Path(_bin("flower-superlink")).parent), os.environ.get("PATH", "")])}

    def __enter__(self) -> Federation:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.audit:  # the sites share this one log here: create it once, before two of them race to create it
            from medsight.audit.log import AuditLog

            AuditLog(audit_location(self.audit))
        self.port = self.port or free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "medsight"\n\n[superlink.medsight]\naddress = "127.0.0.1:{self.port}"\n'
            "insecure = true\n")
        self._start("superlink", [_bin("flower-superlink"), "--insecure", "--isolation", "subprocess",
                                  "--host", "127.0.0.1", "--port", str(self.port),
                                  "--disable-runtime-dependency-installation"])
        self._wait_port(self.port)
        for site, manifest in self.sites.items():
            self.start_site(site, manifest)
        return self

    def start_site(self, site: str, manifest: Path) -> None:
        self._start(f"site-{site}", [_bin("flower-supernode"), "--insecure", "--superlink",
                                     f"127.0.0.1:{self.port}", "--port", str(free_port()),
                                     "--node-config",
                                     site_node_config(site, manifest, self.audit, self.epsilon_budget,
                                                      (self.features or {}).get(site), (self.policy or {}).get(site))])

    def _start(self, name: str, cmd: list[str]) -> None:
        logf = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.work)
        log.info("started %s (pid %d)", name, self.procs[name].pid)

    def _wait_port(self, port: int, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.procs["superlink"].poll() is not None:
                raise FederationError(f"the SuperLink exited; see {self.logs / 'superlink.log'}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise FederationError(f"the SuperLink did not listen on 127.0.0.1:{port} within {timeout:.0f} s")

    def kill(self, name: str) -> None:
        """Kill one process group at once (SIGKILL), as a crashed site would vanish."""
        p = self.procs[name]
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def submit(self, config: dict[str, Any], out_dir: Path) -> subprocess.Popen:
        """Start ``flwr run`` (streaming the run's logs until it ends); returns the process."""
        unknown = set(config) - set(RUN_DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown federated setting(s): {', '.join(sorted(unknown))}")
        if config.get("strategy", "fedavg") not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {config['strategy']!r}")
        if config.get("secagg") and (float(config.get("secagg-max-weight", 1000.0)) <= 0
                                     or float(config.get("secagg-clip-range", 8.0)) <= 0):
            raise ConfigError("secagg-max-weight and secagg-clip-range must be positive")
        if config.get("secagg") and int(config.get("min-sites", 2)) < 2:
            raise ConfigError("secure aggregation needs min-sites >= 2 (a sum over one site is that site's model)")
        check_task(config)
        app = write_app(self.work / "app")
        cfg = {**config, "out-dir": str(Path(out_dir).resolve())}
        # a TOML file, not key=value words: Flower splits those at spaces, and a plan's JSON has spaces
        over = self.work / "run-config.toml"
        over.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in cfg.items()))
        logf = open(self.logs / "flwr-run.log", "ab")
        self.procs["flwr-run"] = subprocess.Popen(
            [_bin("flwr"), "run", str(app), "medsight", "--stream", "--run-config", str(over)], env=self.env,
            stdout=logf, stderr=subprocess.STDOUT, cwd=self.work,
            start_new_session=True)  # stopped with the rest on exit
        return self.procs["flwr-run"]

    def __exit__(self, *exc: Any) -> None:
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def check_task(config: dict[str, Any]) -> None:
    """What the server and every site would reject, rejected before any process is asked (ConfigError)."""
    from medsight.federated.tasks import run_plan, task_kind

    kind = task_kind(config)
    if kind == "segmentation":
        run_plan(config)
    if kind == "mil" and int(config.get("feature-dim", 0)) < 1:
        raise ConfigError("a MIL federation needs feature-dim, the tile encoder's output size")
    mode = str(config.get("dp-mode", "client"))
    if mode not in DP_MODES:
        raise ConfigError(f"dp-mode must be one of {', '.join(DP_MODES)}, got {mode!r}")
    if mode == "sample" and float(config.get("dp-noise", 0.0)) > 0:
        if kind != "classification":
            raise ConfigError("sample-level DP-SGD is built for classification federations; use client-level DP")
        if config.get("strategy", "fedavg") == "fedprox":
            raise ConfigError("sample-level DP-SGD with FedProx is not supported (the proximal term has no "
                              "per-example gradient); use fedavg")
        from medsight.federated.dpsgd import check_private_model
        from medsight.federated.tasks import global_model

        check_private_model(global_model(config))  # a BatchNorm network stops here, not at every site


def wait_result(out_dir: Path, run: subprocess.Popen, timeout: float, since: float | None = None) -> dict[str, Any]:
    """Wait for the server's federation.json (the run's end) or fail after ``timeout`` seconds. With ``since``
    (a time.time() from before the submission) a file older than that is not this run's result."""
    path = Path(out_dir) / "federation.json"
    end = time.monotonic() + timeout

    def fresh() -> bool:
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return False
        return since is None or mtime >= since - 1.0

    while time.monotonic() < end:
        if fresh():
            return json.loads(path.read_text())
        if run.poll() is not None:  # `flwr run --stream` returns when the run ends; give the file a moment
            time.sleep(2.0)
            if fresh():
                return json.loads(path.read_text())
            raise FederationError(f"the federated run ended without a result (flwr run exit {run.returncode}); "
                                  "see flwr-run.log and superlink.log in the logs folder")
        time.sleep(0.5)
    raise FederationError(f"the federated run did not finish within {timeout:.0f} s; see the logs beside it")


RESULT_FILES = ("federation.json", "model.pt", "progress.jsonl")


def local_preflight(sites: dict[str, Path], config: dict[str, Any], features: dict[str, Path] | None = None
                    ) -> dict[str, str]:
    """Each site's pre-flight run here, where a local federation has every site's data: site -> why it fails."""
    from medsight.federated.preflight import site_preflight

    rc = {**RUN_DEFAULTS, **config}
    failed = {}
    for site, data in sites.items():
        nc = {"site": site, "manifest": str(Path(data).resolve())}
        if features and site in features:
            nc["features"] = str(Path(features[site]).resolve())
        _, problem = site_preflight(rc, nc)
        if problem:
            failed[site] = problem
    return failed


def preflight_line(failed: dict[str, str], n_sites: int, min_sites: int) -> str:
    """One line: which sites failed and why, and that nothing was trained."""
    names = "; ".join(f"site {s}: {why}" for s, why in sorted(failed.items()))
    return (f"pre-flight failed ({n_sites - len(failed)} of {n_sites} sites can train, --min-sites {min_sites}; "
            f"nothing trained, no model written): {names}")


def run_federation(sites: dict[str, Path], out_dir: Path, config: dict[str, Any], audit: str | None = None,
                   epsilon_budget: float | None = None, timeout: float = 1800.0,
                   features: dict[str, Path] | None = None, policy: dict[str, dict[str, Any]] | None = None,
                   preflight: bool = True) -> dict[str, Any]:
    """Pre-flight every site here, start everything, run, stop everything; returns the server's record of the run.

    PreflightError before any process starts when fewer than ``min-sites`` sites can train (the sites check
    again when the server asks: a remote site's data can change). A previous run's record in ``out_dir`` is
    replaced (it was once read back as this run's result)."""
    check_task(config)  # before any process starts
    min_sites = int(config.get("min-sites", RUN_DEFAULTS["min-sites"]))
    failed = local_preflight(sites, config, features) if preflight else {}
    if len(sites) - len(failed) < min_sites:
        raise PreflightError(preflight_line(failed, len(sites), min_sites))
    for site, why in failed.items():
        log.warning("site %s fails pre-flight and will not train: %s", site, why)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = [out_dir / f for f in RESULT_FILES if (out_dir / f).exists()]
    if stale:
        log.warning("replacing the previous run's %s in %s", ", ".join(p.name for p in stale), out_dir)
        for f in stale:
            f.unlink()
    with tempfile.TemporaryDirectory(prefix="medsight-flwr-") as tmp, \
            Federation(sites, Path(tmp), audit, epsilon_budget, logs=out_dir / "logs", features=features,
                       policy=policy) as fed:
        since = time.time()
        run = fed.submit(config, out_dir)
        result = wait_result(out_dir, run, timeout, since)
    if result.get("status") == "preflight_failed":
        raise PreflightError(preflight_line(result.get("preflight", {}), len(sites), min_sites))
    return result
