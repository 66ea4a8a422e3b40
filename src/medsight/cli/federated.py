"""``medsight federated run|app|node-config``: federated training on Flower (SuperLink + one SuperNode per site)."""

from __future__ import annotations

from pathlib import Path

import click

from medsight.cli.audited import audited, current_event
from medsight.federated.launch import RUN_DEFAULTS as D  # one place for the run's defaults (stdlib imports only)


def _pairs(values: tuple[str, ...], option: str, what: str) -> dict[str, Path]:
    """NAME=PATH pairs of a repeated option; every path must exist."""
    from medsight.errors import ConfigError

    out: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{option} takes NAME={what}, got {v!r}")
        if not Path(path).exists():
            raise ConfigError(f"site {name}: {path} does not exist")
        out[name] = Path(path)
    return out


def _sites(values: tuple[str, ...]) -> dict[str, Path]:
    from medsight.errors import ConfigError

    out = _pairs(values, "--site", "DATA")
    if len(out) < 2:
        raise ConfigError("a federation needs at least two --site NAME=DATA")
    return out


@click.group()
def federated() -> None:
    """Federated training across sites on Flower; images never leave a site."""


@federated.command()
@click.option("--site", "site_args", multiple=True, required=True,
              help="NAME=DATA, once per site: a classification manifest, a segmentation dataset folder or a MIL "
                   "label CSV; each site's process reads only its own rows/cases of it.")
@click.option("--task", type=click.Choice(["classification", "segmentation", "mil"]), default="classification",
              show_default=True)
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Segmentation: the agreed plan.json (`medsight plan`); it is sent to every site.")
@click.option("--configuration", default="", help="Segmentation: the plan configuration to train (default: the "
              "plan's default).")
@click.option("--features", "feature_args", multiple=True,
              help="MIL: NAME=FOLDER of that site's tile features (default: features/ beside its label CSV).")
@click.option("--feature-dim", type=int, default=D["feature-dim"], help="MIL: the tile encoder's output size.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the server's record (federation.json), the final model and the process logs.")
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--local-steps", type=int, default=10, show_default=True, help="Optimiser steps per site per round.")
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox"]), default="fedavg", show_default=True)
@click.option("--mu", type=float, default=D["proximal-mu"], show_default=True, help="FedProx proximal weight.")
@click.option("--min-sites", type=int, default=2, show_default=True,
              help="Fewer contributing sites in a round: the global model is kept for that round.")
@click.option("--round-timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for sites.")
@click.option("--dp-noise", type=float, default=D["dp-noise"], show_default=True,
              help="Noise multiplier of client-level DP (0: off).")
@click.option("--dp-mode", type=click.Choice(["client", "sample"]), default=D["dp-mode"], show_default=True,
              help="client: clip and noise each site's round update; sample: DP-SGD inside each site (Opacus), "
                   "per-example clipping and noise every step (classification, networks without BatchNorm).")
@click.option("--dp-clip", type=float, default=D["dp-clip"], show_default=True, help="L2 clip of each site's update.")
@click.option("--dp-delta", type=float, default=D["dp-delta"], show_default=True)
@click.option("--epsilon", type=float, default=D["dp-epsilon"], show_default=True,
              help="Each site's privacy budget; a site stops contributing when a round would exceed it.")
@click.option("--audit", default=None, help="Audit log URL or SQLite file for the sites' privacy spends.")
@click.option("--seed", type=int, default=D["seed"], show_default=True)
@click.option("--secagg", is_flag=True,
              help="Secure aggregation (Flower's SecAgg+): the server learns only the sum of the sites' weights.")
@click.option("--secagg-max-weight", type=float, default=D["secagg-max-weight"], show_default=True,
              help="SecAgg+ weight scale: set just above the largest site's training count (smaller: finer "
                   "quantisation; below a site's count: its weights may be clipped).")
@click.option("--package", "package_dir", type=click.Path(path_type=Path), default=None,
              help="Also write the final model as a verified, registered package here.")
@click.option("--name", default="federated-classifier", show_default=True, help="Package name (with --package).")
@click.option("--force", is_flag=True, help="Package even when the sites' final validation metric is undefined or "
              "below the initial model's (a federation that did not learn).")
@click.option("--min-site-rows", type=int, default=D["min-site-rows"], show_default=True,
              help="Pre-flight: a site needs at least this many training rows/cases/slides.")
@click.option("--label", default="", help="The manifest's 0/1 column to learn (needed when it has several).")
@click.option("--backbone", default=D["backbone"], show_default=True,
              help="small (two conv blocks, cheap to send) or a medsight backbone, e.g. resnet10-slim-evidence.")
@click.option("--image-size", type=int, default=D["image-size"], show_default=True,
              help="Square input size at every site.")
@click.option("--batch-size", type=int, default=D["batch-size"], show_default=True)
@click.option("--lr", type=float, default=D["lr"], show_default=True, help="Each site's Adam learning rate.")
@click.option("--balanced", is_flag=True, help="Each site draws positives and negatives equally often.")
@audited("federated.run", outputs=("out_dir",))
def run(site_args: tuple[str, ...], task: str, plan_path: Path | None, configuration: str,
        feature_args: tuple[str, ...], feature_dim: int, out_dir: Path, rounds: int, local_steps: int, strategy: str,
        mu: float, min_sites: int, round_timeout: float, dp_noise: float, dp_mode: str, dp_clip: float,
        dp_delta: float, epsilon: float, audit: str | None, seed: int, secagg: bool, secagg_max_weight: float, package_dir: Path | None,
        name: str, force: bool, min_site_rows: int, label: str, backbone: str, image_size: int, batch_size: int,
        lr: float, balanced: bool) -> None:
    """Run a whole federation on this machine (127.0.0.1): for a trial or a demo of the multi-machine setup."""
    from medsight.errors import ConfigError
    from medsight.federated.launch import NotTrainedError, run_federation

    sites = _sites(site_args)
    if backbone != "small" and task == "classification":
        from medsight.nets.backbones import check_backbone

        check_backbone(backbone)  # a wrong name stops here, not in every site's process
    if backbone != "small" and task == "mil":
        from medsight.nets.mil import load_mil

        load_mil(backbone)
    if task == "segmentation" and plan_path is None:
        raise ConfigError("--task segmentation needs --plan plan.json (from `medsight plan`)")
    if min_sites > len(sites) or min_sites < 1:
        raise ConfigError(f"--min-sites must be between 1 and the number of sites ({len(sites)}), got {min_sites}")
    config = {"rounds": rounds, "local-steps": local_steps, "strategy": strategy, "proximal-mu": mu,
              "min-sites": min_sites, "round-timeout": round_timeout, "dp-noise": dp_noise, "dp-mode": dp_mode,
              "dp-clip": dp_clip, "dp-delta": dp_delta, "dp-epsilon": epsilon, "seed": seed, "secagg": secagg,
              "secagg-max-weight": secagg_max_weight, "label": label, "backbone": backbone, "image-size": image_size,
              "batch-size": batch_size, "lr": lr, "balanced": balanced, "task": task,
              "plan": plan_path.read_text() if plan_path else "", "configuration": configuration,
              "feature-dim": feature_dim, "min-site-rows": min_site_rows}
    result = run_federation(sites, out_dir, config, audit=audit, epsilon_budget=epsilon if dp_noise > 0 else None,
                            timeout=rounds * round_timeout * 2 + 300,
                            features=_pairs(feature_args, "--features", "FOLDER") or None)
    key = "dice" if task == "segmentation" else "auc"
    for r in result["rounds"]:
        per = "  ".join(f"{s}: {key} {m.get(key, float('nan')):.3f} ece {m['ece']:.3f}"
                        for s, m in sorted(r["evaluate"].items()))
        g = r.get("global", {})
        click.echo(f"round {r['round']}: {len(r['contributors'])}/{r['sites_asked']} sites contributed, "
                   f"global {key} {g.get(key, float('nan')):.3f} ece {g.get('ece', float('nan')):.3f} | {per}")
    for site, why in sorted(result.get("preflight", {}).items()):
        click.echo(f"site {site} failed pre-flight and did not train: {why}")
    for r in result.get("refusals", []):
        click.echo(f"site {r['site']} refused round {r['round']}: {r['reason']}")
    for site, led in sorted(result.get("privacy", {}).items()):
        click.echo(f"site {site} privacy ledger: eps {led['epsilon']:.3f} at delta {led['delta']:g} "
                   f"(RDP, Opacus conversion; Mironov 2017: {led.get('epsilon-mironov', float('nan')):.3f})")
    if result.get("status") == "no_round_aggregated":
        raise NotTrainedError(f"no round aggregated any site's update: no model written to {out_dir}")
    click.echo(f"wrote {out_dir / 'federation.json'} and {out_dir / 'model.pt'}")
    current_event().note(task=task, sites=sorted(sites), rounds=len(result["rounds"]), strategy=strategy,
                         dp_noise=dp_noise)
    if package_dir is not None:
        from medsight.federated.package import package_federation

        pkg = package_federation(out_dir, package_dir, name, force=force)
        current_event().package(pkg)
        click.echo(f"package {pkg.id} at {pkg.path}")


@federated.command()
@click.argument("folder", type=click.Path(path_type=Path))
def app(folder: Path) -> None:
    """Write the Flower app folder to submit with `flwr run FOLDER <superlink>` (multi-machine setup)."""
    from medsight.federated.launch import write_app

    click.echo(str(write_app(folder) / "pyproject.toml"))


@federated.command("node-config")
@click.option("--site", required=True, help="This site's name (its value in the manifest's site column).")
@click.option("--manifest", type=click.Path(exists=True, path_type=Path), required=True,
              help="This site's data: a classification manifest, a segmentation dataset folder or a MIL label CSV.")
@click.option("--features", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="MIL: this site's tile-features folder (default: features/ beside the label CSV).")
@click.option("--audit", default=None, help="This site's audit log URL or SQLite file.")
@click.option("--epsilon", type=float, default=None,
              help="This site's own eps budget over all runs; setting it makes DP required (a run without noise is "
                   "refused). A run's smaller --epsilon still applies.")
@click.option("--min-noise", type=float, default=0.0, show_default=True,
              help="The smallest noise multiplier this site accepts (> 0 makes DP required).")
@click.option("--max-clip", type=float, default=None, help="The largest L2 clip this site accepts.")
@click.option("--delta", type=float, default=1e-5, show_default=True,
              help="This site's delta: its ledger accounts at it and a run asking a larger one is refused.")
@click.option("--dp-modes", default="client,sample", show_default=True,
              help="The DP kinds this site allows (client, sample).")
def node_config(site: str, manifest: Path, features: Path | None, audit: str | None, epsilon: float | None,
                min_noise: float, max_clip: float | None, delta: float, dp_modes: str) -> None:
    """Print the --node-config value for this site's `flower-supernode`: its data and its privacy policy, which
    the site enforces whatever the coordinator's run config asks."""
    import math

    from medsight.federated.launch import check_site_data, site_node_config
    from medsight.federated.site_privacy import SitePolicy

    check_site_data(site, manifest)
    policy = SitePolicy(min_noise=min_noise, max_clip=max_clip if max_clip is not None else math.inf, delta=delta,
                        budget=epsilon if epsilon is not None else math.inf,
                        modes=tuple(m.strip() for m in dp_modes.split(",") if m.strip()))
    click.echo(site_node_config(site, manifest, audit, None, features, policy.node_config()))
