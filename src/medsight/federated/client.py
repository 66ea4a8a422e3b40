"""The site's ClientApp: local training through the engine, optional client-level DP, held-out evaluation.

Runs inside the site's SuperNode; reads only the node config's manifest rows of its own site. What leaves the
site: the (clipped, noised when DP is on) model weights after local steps, the number of training examples,
the mean local loss and the held-out metrics (AUC, ECE, accuracy, log loss, n); before round 1, the answer to the
server's pre-flight query (federated/preflight.py); when the site refuses a round, why (its privacy policy or
budget, federated/site_privacy.py). Never images, labels or rows. The seed from the run config drives training
only; DP noise comes from the OS's CSPRNG (federated/privacy.py), so the coordinator cannot regenerate it.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from medsight.engine.loop import local_update
from medsight.federated.dpsgd import dpsgd_update, sample_rate
from medsight.federated.privacy import apply_delta, clip_and_noise, weights_delta
from medsight.federated.secagg import clipped_fraction, fitres_content, is_secagg, secagg_when_asked
from medsight.federated.launch import RUN_DEFAULTS
from medsight.engine.task import Task
from medsight.federated.preflight import site_preflight
from medsight.federated.site import ProxTask
from medsight.federated.site_privacy import SitePrivacy
from medsight.federated.tasks import site_task

log = logging.getLogger(__name__)
app = ClientApp()
_TASKS: dict[tuple[str, str], Task] = {}  # the site's data stay loaded between rounds of a run


def _task(context: Context) -> Task:
    nc = context.node_config
    key = (str(nc["manifest"]), str(nc["site"]))
    if key not in _TASKS:
        _TASKS[key] = site_task({**RUN_DEFAULTS, **context.run_config}, nc)
    return _TASKS[key]


def _site_seed(site: str, seed: int) -> int:
    """The seed of this site's training (batches, augmentation): public, and used for nothing private."""
    return (seed * 1_000_003 + zlib.crc32(site.encode())) % (2**31)


def _reply(msg: Message, weights: dict[str, Any] | None, metrics: dict[str, Any], site: str,
           refused: str | None = None) -> Message:
    """Plain: weights, metrics and the site's name (and why it refused, if it did) as records. Under SecAgg+ (the
    message carries its configs): the ``fitres.*`` layout the mod masks, the name and reason among the metrics."""
    info = {"site": site, **({"refused": refused} if refused else {})}
    if is_secagg(msg):
        return Message(fitres_content(weights or {}, int(metrics["num-examples"]), {**metrics, **info}),
                       reply_to=msg)
    content = RecordDict({"metrics": MetricRecord(metrics), "info": ConfigRecord(info)})
    if weights is not None:
        content["arrays"] = ArrayRecord(weights)
    return Message(content, reply_to=msg)


@app.train(mods=[secagg_when_asked])
def train(msg: Message, context: Context) -> Message:
    nc, cfg = context.node_config, msg.content["config"]
    site, rnd = str(nc["site"]), int(cfg["server-round"])
    task = _task(context)
    task.setup()
    glob = msg.content["arrays"].to_torch_state_dict()
    glob = {k: v.clone() for k, v in glob.items()}
    dp = SitePrivacy(nc, cfg, site, rnd, context.run_id)
    if not dp.on and hasattr(task, "adapt_global"):  # e.g. MIL's first-round feature statistics (never under DP)
        glob = task.adapt_global(glob)
    mu = float(cfg.get("proximal-mu", 0.0))
    run_task = ProxTask(task, glob, mu) if mu > 0 else task
    seed, steps = _site_seed(site, int(cfg.get("seed", 0))), int(cfg["local-steps"])
    q = sample_rate(task) if dp.sample_level else 1.0
    why = dp.refusal(steps, q)
    if why is not None:
        log.warning("site %s refuses round %d: %s", site, rnd, why)
        # under SecAgg+ a weight of 0 keeps the masks cancelling; the weights sent are then irrelevant
        return _reply(msg, glob if is_secagg(msg) else None, {"num-examples": 0, "dp-refused": 1}, site, why)
    out: dict[str, Any] = {"dp-refused": 0}
    if dp.sample_level:  # noise and Poisson draws from the OS's CSPRNG inside dpsgd_update
        new, n, metrics, q = dpsgd_update(task, glob, steps, seed, dp.sigma, dp.clip)
        dp.spend_sample(q, steps)
        out.update({**dp.report(), "empty-batches": int(metrics["empty_batches"])})
    else:
        new, n, metrics = local_update(run_task, glob, steps, seed, rnd)
        if dp.on:  # the round's update, clipped and noised (CSPRNG-seeded noise) before it leaves
            noised, norm = clip_and_noise(weights_delta(new, glob), dp.clip, dp.sigma)
            new = apply_delta(glob, noised)
            dp.spend_client(norm)
            out.update({**dp.report(), "update-norm": norm})
        else:  # the mean training loss is computed on the private examples without noise: it stays home under DP
            out["loss"] = float(metrics["loss"])
    out["num-examples"] = int(n)
    if is_secagg(msg):
        frac = clipped_fraction(new, int(n), float(cfg["secagg-max-weight"]), float(cfg["secagg-clip-range"]))
        if frac > 0:
            log.warning("site %s: SecAgg+ clips %.2g of the weights (raise secagg-clip-range)", site, frac)
        out["secagg-clipped"] = frac
    return _reply(msg, new, out, site)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task = _task(context)
    model = task.build_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics = task.validate(model)
    rec = MetricRecord({k: float(v) for k, v in metrics.items()})
    return Message(RecordDict({"metrics": rec, "info": ConfigRecord({"site": str(context.node_config["site"])})}),
                   reply_to=msg)



@app.query()
def query(msg: Message, context: Context) -> Message:
    """The server's pre-flight before round 1: ``preflight`` is empty when this site can train, else why not."""
    nc = context.node_config
    key = (str(nc["manifest"]), str(nc["site"]))
    task, problem = site_preflight({**RUN_DEFAULTS, **context.run_config}, nc)
    if task is not None:
        _TASKS[key] = task
    else:
        _TASKS.pop(key, None)
        log.warning("site %s fails pre-flight: %s", nc["site"], problem)
    return Message(RecordDict({"info": ConfigRecord({"site": str(nc["site"]), "preflight": problem or ""})}),
                   reply_to=msg)
