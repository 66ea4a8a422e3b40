"""One round's privacy at a site: the site's own policy, its ledger, its budget, the checks before training, the audit.

Who decides what: the coordinator's run config *asks* (dp-noise, dp-clip, dp-delta, dp-mode, dp-epsilon); the
site's node config, written by the hospital (``medsight federated node-config``), *decides* (``SitePolicy``). A run
asking for less privacy than the site's policy (no noise where the site requires DP, a smaller noise multiplier, a
larger clip or delta, a DP mode the site does not allow) is refused before the site trains, and the reason goes to
the site's audit log and back to the coordinator's record. The site accounts at its own delta, in its own ledger
file (beside its data, so the budget holds across runs), against the smaller of its budget and the run's.

The ClientApp asks ``refusal`` before it trains, then records what it released: a client-level release
(``spend_client``) or a DP-SGD run (``spend_sample``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsight.audit.log import AuditLog
from medsight.errors import ConfigError
from medsight.federated.launch import DP_MODES
from medsight.federated.privacy import ACCOUNTANT, GaussianAccountant

SITE_DELTA = 1e-5  # a site that names no delta accounts at this one, whatever the run asks


@dataclass(frozen=True)
class SitePolicy:
    """The hospital's privacy policy, read from its node config (keys in brackets).

    ``min_noise`` [dp-min-noise]: the smallest noise multiplier the site accepts; ``max_clip`` [dp-max-clip]: the
    largest L2 clip (eps depends on the multiplier alone, but the clip bounds how far one release moves the model);
    ``delta`` [dp-delta]: the site's delta, the largest it accepts and the one its ledger uses; ``budget``
    [epsilon-budget]: its eps over all runs; ``modes`` [dp-modes]: the DP kinds it allows. A budget or a minimum
    noise makes DP required: a run without noise would release the site's update with eps = infinity."""

    min_noise: float = 0.0
    max_clip: float = math.inf
    delta: float = SITE_DELTA
    budget: float = math.inf
    modes: tuple[str, ...] = DP_MODES

    def __post_init__(self) -> None:
        if self.min_noise < 0 or self.max_clip <= 0 or not 0.0 < self.delta < 1.0 or self.budget <= 0:
            raise ConfigError(f"invalid site privacy policy {self}: need dp-min-noise >= 0, dp-max-clip > 0, "
                              "dp-delta in (0, 1), epsilon-budget > 0")
        bad = set(self.modes) - set(DP_MODES)
        if bad or not self.modes:
            raise ConfigError(f"dp-modes must name some of {', '.join(DP_MODES)}, got {', '.join(self.modes)}")

    @property
    def requires_dp(self) -> bool:
        return self.min_noise > 0 or math.isfinite(self.budget)

    @classmethod
    def from_node_config(cls, nc: Mapping[str, Any]) -> SitePolicy:
        modes = str(nc.get("dp-modes", ",".join(DP_MODES)))
        return cls(min_noise=float(nc.get("dp-min-noise", 0.0)), max_clip=float(nc.get("dp-max-clip", math.inf)),
                   delta=float(nc.get("dp-delta", SITE_DELTA)), budget=float(nc.get("epsilon-budget", math.inf)),
                   modes=tuple(m.strip() for m in modes.split(",") if m.strip()))

    def node_config(self) -> dict[str, Any]:
        """The policy as node-config entries (what ``medsight federated node-config`` writes)."""
        out: dict[str, Any] = {"dp-delta": self.delta, "dp-modes": ",".join(self.modes)}
        if self.min_noise > 0:
            out["dp-min-noise"] = self.min_noise
        if math.isfinite(self.max_clip):
            out["dp-max-clip"] = self.max_clip
        if math.isfinite(self.budget):
            out["epsilon-budget"] = self.budget
        return out

    def refusal(self, cfg: Mapping[str, Any]) -> str | None:
        """Why the run config ``cfg`` asks for less privacy than this policy allows; None when it does not."""
        sigma, clip = float(cfg.get("dp-noise", 0.0)), float(cfg.get("dp-clip", 0.0))
        mode, delta = str(cfg.get("dp-mode", "client")), float(cfg.get("dp-delta", self.delta))
        if sigma <= 0:
            if not self.requires_dp:
                return None
            why = f"eps budget {self.budget:g}" if math.isfinite(self.budget) else f"min noise {self.min_noise:g}"
            return f"the site requires differential privacy ({why}); the run asks for none (dp-noise 0)"
        if sigma < self.min_noise:
            return f"the run's noise multiplier {sigma:g} is below the site's minimum {self.min_noise:g}"
        if mode not in self.modes:
            return f"dp-mode {mode!r} is not allowed by the site (allowed: {', '.join(self.modes)})"
        if clip > self.max_clip:
            return f"the run's clip {clip:g} is above the site's maximum {self.max_clip:g}"
        if delta > self.delta:
            return f"the run's delta {delta:g} is larger than the site's {self.delta:g}"
        return None


@dataclass
class SitePrivacy:
    node_config: Any
    config: Any
    site: str
    round: int
    run_id: int
    acc: GaussianAccountant | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.policy = SitePolicy.from_node_config(self.node_config)
        self.sigma = float(self.config.get("dp-noise", 0.0))
        self.clip = float(self.config.get("dp-clip", 0.0))
        self.mode = str(self.config.get("dp-mode", "client"))
        self.on = self.sigma > 0
        self.ledger = Path(str(self.node_config["ledger"]))
        self.budget = min(self.policy.budget, float(self.config.get("dp-epsilon", math.inf)))
        self.acc = GaussianAccountant.load(self.ledger, self.policy.delta) if self.on else None

    @property
    def sample_level(self) -> bool:
        return self.on and self.mode == "sample"

    def refusal(self, steps: int, sample_rate: float) -> str | None:
        """Why the site will not release this round (its policy, then its budget); audited. None: go ahead."""
        why = self.policy.refusal(self.config)
        if why is not None:
            self._audit("federated.dp_policy_refused", reason=why, asked={
                k: self.config.get(k) for k in ("dp-noise", "dp-clip", "dp-delta", "dp-mode", "dp-epsilon")})
            return why
        if not self.on:
            return None
        planned = [(self.sigma, sample_rate, steps)] if self.sample_level else None
        if_spent = self.acc.epsilon(extra_sampled=planned) if planned else self.acc.epsilon([self.sigma])
        if if_spent <= self.budget:
            return None
        why = f"this round would take eps to {if_spent:.3f}, past the budget {self.budget:g} (delta {self.acc.delta:g})"
        self._audit("federated.dp_refused", reason=why, sigma=self.sigma, epsilon=self.acc.epsilon(),
                    epsilon_if_spent=if_spent)
        return why

    def allows(self, steps: int, sample_rate: float) -> bool:
        return self.refusal(steps, sample_rate) is None

    def report(self) -> dict[str, float]:
        """What the coordinator is told of the ledger: eps (the accountant named in the site's audit), delta, and
        eps by the looser Mironov 2017 conversion for comparison."""
        return {"epsilon": self.acc.epsilon(), "delta": self.acc.delta, "epsilon-mironov": self.acc.epsilon_mironov()}

    def spend_client(self, update_norm: float) -> float:
        eps = self.acc.spend(self.sigma)
        self.acc.save(self.ledger)
        self._audit("federated.dp_spend", sigma=self.sigma, clip=self.clip, epsilon=eps,
                    epsilon_mironov=self.acc.epsilon_mironov(), releases=len(self.acc.sigmas),
                    update_norm=update_norm)
        return eps

    def spend_sample(self, sample_rate: float, steps: int) -> float:
        eps = self.acc.spend_sampled(self.sigma, sample_rate, steps)
        self.acc.save(self.ledger)
        self._audit("federated.dp_spend", sigma=self.sigma, clip=self.clip, sample_rate=sample_rate, steps=steps,
                    epsilon=eps, epsilon_mironov=self.acc.epsilon_mironov(), releases=len(self.acc.sampled))
        return eps

    def _audit(self, event: str, **details: Any) -> None:
        url = self.node_config.get("audit")
        AuditLog(str(url) if url else None).append(
            event, f"site:{self.site}", site=self.site, round=self.round, mode=self.mode if self.on else "off",
            delta=self.policy.delta, budget=self.budget if math.isfinite(self.budget) else None,
            accountant=ACCOUNTANT, run_id=self.run_id, **details)
