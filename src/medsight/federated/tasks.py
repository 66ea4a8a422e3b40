"""What a federation trains: the run config's ``task`` picks the network (server and sites alike) and each site's
engine task.

- ``classification``: a binary image classifier (site.py), the site names a classification manifest;
- ``segmentation``: the agreed plan's network (seg_site.py), the site names its dataset folder; the plan travels
  in the run config as JSON (``plan``), with the configuration to train (``configuration``);
- ``mil``: a slide-level MIL model on stored tile features (mil_site.py), the site names its label CSV and its
  features folder (node config ``features``, default ``features/`` beside the CSV); ``feature-dim`` is the
  encoder's output size.

The server never reads a site's data: everything it needs to build the network is in the run config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from medsight.engine.task import Task
from medsight.errors import ConfigError

TASKS = ("classification", "segmentation", "mil")


def task_kind(rc: Mapping[str, Any]) -> str:
    kind = str(rc.get("task", "classification") or "classification")
    if kind not in TASKS:
        raise ConfigError(f"federated task must be one of {', '.join(TASKS)}, got {kind!r}")
    return kind


def run_plan(rc: Mapping[str, Any]) -> tuple[Any, str]:
    """The plan and configuration a segmentation federation trains (a ConfigError when absent or unknown)."""
    from medsight.plan.plan import Plan

    text = str(rc.get("plan", "") or "")
    if not text:
        raise ConfigError("a segmentation federation needs the plan (medsight federated run --plan plan.json)")
    try:
        plan = Plan.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"the federation's plan is not a medsight plan ({err})") from err
    configuration = str(rc.get("configuration", "") or "") or plan.default_configuration
    plan.config(configuration)  # an unknown configuration is an error here, on the server and at every site
    return plan, configuration


def mil_name(rc: Mapping[str, Any]) -> str:
    from medsight.federated.mil_site import DEFAULT_MIL
    from medsight.federated.site import SMALL

    name = str(rc.get("backbone", SMALL))
    return DEFAULT_MIL if name == SMALL else name


def global_model(rc: Mapping[str, Any]) -> nn.Module:
    """The network the server starts from (seeded by the caller): the same one every site builds."""
    kind = task_kind(rc)
    if kind == "segmentation":
        from medsight.federated.seg_site import segmentation_model

        return segmentation_model(*run_plan(rc))
    if kind == "mil":
        from medsight.federated.mil_site import mil_model

        return mil_model(mil_name(rc), int(rc.get("feature-dim", 0)))
    from medsight.federated.site import SMALL, site_model

    return site_model(str(rc.get("backbone", SMALL)), int(rc.get("image-size", 32)))


def site_task(rc: Mapping[str, Any], nc: Mapping[str, Any]) -> Task:
    """This site's engine task from the run config ``rc`` and its node config ``nc`` (site name, data path)."""
    kind, site, data, seed = task_kind(rc), str(nc["site"]), Path(str(nc["manifest"])), int(rc["seed"])
    if kind == "segmentation":
        from medsight.federated.seg_site import SegSiteTask

        return SegSiteTask(data, site, *run_plan(rc), seed=seed)
    if kind == "mil":
        from medsight.federated.mil_site import MilSiteTask

        features = Path(str(nc.get("features", "") or data.parent / "features"))
        return MilSiteTask(data, site, features, mil_name(rc), int(rc.get("feature-dim", 0)), seed=seed,
                           lr=float(rc["lr"]))
    from medsight.federated.site import SiteTask

    return SiteTask(data, site, seed=seed, label=str(rc["label"]) or None, backbone=str(rc["backbone"]),
                    size=int(rc["image-size"]), batch_size=int(rc["batch-size"]), lr=float(rc["lr"]),
                    balanced=bool(rc["balanced"]))
