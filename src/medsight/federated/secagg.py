"""Secure aggregation for medsight's ServerApp/ClientApp: Flower's SecAgg+ protocol, stage by stage.

Why: with plain FedAvg the SuperLink sees every site's weights; with SecAgg+ each site uploads its weighted,
quantised weights plus pairwise and private masks that cancel only in the sum, so the server learns the
example-weighted mean and nothing about one site (unless it colludes with ``threshold`` sites).

Flower 1.42's ``SecAggPlusWorkflow`` is written for its legacy ``Strategy`` + ``LegacyContext``; medsight's
server is its own Message-API loop, so this module drives the workflow's four stages (setup, share keys,
collect masked vectors, unmask) directly with a small stand-in for that context. On the site, Flower's
``secaggplus_mod`` runs the protocol; the ClientApp's own ``train`` is called once per round (in the collect
stage) and answers in the legacy ``fitres.*`` layout the mod reads.

Precision: SecAgg+ quantises. Each site multiplies its weights by r_i = n_i / max_weight, clips to
[-clip_range, clip_range] and stochastically rounds to ``quantization_range`` (2**22) levels; the aggregate
therefore differs from exact FedAvg by at most K * (2 * clip_range / 2**22) * max_weight / sum(n_i) per
coordinate (K sites): 1.4e-4 for 2 sites of 28 training examples with the defaults (clip 8, max_weight 1000),
1.4e-5 with max_weight 100. Choose ``secagg-max-weight`` just above
the largest site's training count for the smallest error; a site with more examples than that risks clipping.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.client.mod import secaggplus_mod
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState
from flwr.serverapp import Grid

log = logging.getLogger(__name__)
QUANTIZATION_RANGE = 2**22  # Flower's default levels


def float_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The tensors that are securely summed, in the order both sides use (integer buffers stay global)."""
    return sorted(k for k, v in state.items() if v.is_floating_point())


def error_bound(n_examples: list[int], max_weight: float, clip_range: float) -> float:
    """Largest per-coordinate difference between the SecAgg+ aggregate and exact FedAvg (see module doc)."""
    return len(n_examples) * (2 * clip_range / QUANTIZATION_RANGE) * max_weight / max(sum(n_examples), 1)


# --- site side ------------------------------------------------------------------------------------------------

def secagg_when_asked(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for messages that carry SecAgg+ configs; every other message goes straight on,
    so one ClientApp serves runs with and without secure aggregation."""
    if is_secagg(msg):
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def is_secagg(msg: Message) -> bool:
    """Whether the server asked for this round under SecAgg+ (its configs travel in the message)."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def fitres_content(new: dict[str, torch.Tensor], n: int, metrics: dict[str, Any]) -> RecordDict:
    """The train reply in the ``fitres.*`` layout ``secaggplus_mod`` masks (the mod then empties its arrays, so
    no plain weights leave the site); ``metrics`` (the site name included) travel beside them in the clear."""
    arrays = [new[k].detach().cpu().numpy() for k in float_keys(new)]
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), int(n), dict(metrics))
    return compat.fitres_to_recorddict(res, keep_input=False)


def clipped_fraction(new: dict[str, torch.Tensor], n: int, max_weight: float, clip_range: float) -> float:
    """Share of coordinates SecAgg+ would clip (|w| * n / max_weight > clip_range): non-zero means a biased sum."""
    r = n / max_weight
    vals = torch.cat([new[k].detach().flatten().double() for k in float_keys(new)])
    return float((vals.abs() * r > clip_range).double().mean()) if vals.numel() else 0.0


# --- server side ----------------------------------------------------------------------------------------------

class _Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


class _Stand:
    """What the workflow's stages read from Flower's LegacyContext: the round, a strategy that samples the given
    nodes and hands back the unmasked aggregate, a client manager for one log line, a history to write to."""

    def __init__(self, nodes: list[int], rnd: int) -> None:
        self.nodes, self.aggregate = nodes, None
        self.state = RecordDict({MAIN_PARAMS_RECORD: ArrayRecord(),
                                 MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd})})
        self.strategy, self.client_manager, self.history = self, self, self

    def configure_fit(self, rnd: int, parameters: Parameters, manager: Any) -> list[tuple[_Proxy, FitIns]]:
        return [(_Proxy(n), FitIns(Parameters([], ""), {})) for n in self.nodes]

    def num_available(self) -> int:
        return len(self.nodes)

    def aggregate_fit(self, rnd: int, results: list[tuple[Any, FitRes]], failures: list[Any]
                      ) -> tuple[Parameters | None, dict[str, Any]]:
        params = results[0][1].parameters if results else None
        self.aggregate = parameters_to_ndarrays(params) if params is not None else None
        return params, {}

    def add_metrics_distributed_fit(self, server_round: int, metrics: dict[str, Any]) -> None:
        return None


def secagg_round(grid: Grid, nodes: list[int], glob: dict[str, torch.Tensor], config: dict[str, Any],
                 timeout: float, min_sites: int, max_weight: float, clip_range: float, threshold: float = 0.5
                 ) -> tuple[dict[int, FitRes], dict[str, torch.Tensor] | None]:
    """One round of training under SecAgg+: every node's train reply (metrics only, weights masked) and the
    example-weighted mean of the contributing sites' weights, or None when fewer than ``min_sites``
    contributed or the protocol could not finish (too few sites left to unmask)."""
    wf = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=threshold, max_weight=max_weight,
                            clipping_range=clip_range, quantization_range=QUANTIZATION_RANGE, timeout=timeout)
    stand, state = _Stand(nodes, int(config["server-round"])), WorkflowState()
    ctx = cast(Any, stand)  # duck-types the LegacyContext the stages read
    if not wf.setup_stage(grid, ctx, state):
        return {}, None
    state.nid_to_fitins = {n: RecordDict({"arrays": ArrayRecord(glob), "config": ConfigRecord(config)})
                           for n in state.active_node_ids}
    ok = wf.share_keys_stage(grid, ctx, state) and wf.collect_masked_vectors_stage(grid, ctx, state)
    replies = {p.node_id: res for p, res in state.legacy_results}
    contributing = sum(1 for r in replies.values() if r.num_examples > 0)
    if not ok or contributing < min_sites:
        return replies, None
    if not wf.unmask_stage(grid, ctx, state) or stand.aggregate is None:
        return replies, None
    out = {k: v.clone() for k, v in glob.items()}
    for k, a in zip(float_keys(glob), stand.aggregate):
        out[k] = torch.from_numpy(np.asarray(a).reshape(tuple(glob[k].shape))).to(glob[k].dtype)
    return replies, out
