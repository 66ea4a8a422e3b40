"""One round's privacy bookkeeping at a site: its ledger, its budget, the check before training and the audit trail.

The ClientApp asks ``allows`` before it trains (a round that would take the site past its eps is refused and the
refusal audited), then records what it released: a client-level release (``spend_client``) or a DP-SGD run
(``spend_sample``). The ledger file lives beside the site's data, so the budget holds across runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsight.audit.log import AuditLog
from medsight.federated.privacy import GaussianAccountant


@dataclass
class SitePrivacy:
    node_config: Any
    config: Any
    site: str
    round: int
    run_id: int
    acc: GaussianAccountant | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.sigma = float(self.config.get("dp-noise", 0.0))
        self.clip = float(self.config.get("dp-clip", 0.0))
        self.mode = str(self.config.get("dp-mode", "client"))
        self.on = self.sigma > 0
        self.ledger = Path(str(self.node_config["ledger"]))
        self.budget = float(self.node_config.get("epsilon-budget", self.config.get("dp-epsilon", 1e9)))
        self.acc = GaussianAccountant.load(self.ledger, float(self.config["dp-delta"])) if self.on else None

    @property
    def sample_level(self) -> bool:
        return self.on and self.mode == "sample"

    def allows(self, steps: int, sample_rate: float) -> bool:
        """Whether this round's release fits the budget; a refusal is audited."""
        if not self.on:
            return True
        planned = [(self.sigma, sample_rate, steps)] if self.sample_level else None
        if_spent = self.acc.epsilon(extra_sampled=planned) if planned else self.acc.epsilon([self.sigma])
        if if_spent <= self.budget:
            return True
        self._audit("federated.dp_refused", sigma=self.sigma, epsilon=self.acc.epsilon(),
                    epsilon_if_spent=if_spent)
        return False

    def spend_client(self, update_norm: float) -> float:
        eps = self.acc.spend(self.sigma)
        self.acc.save(self.ledger)
        self._audit("federated.dp_spend", sigma=self.sigma, clip=self.clip, epsilon=eps,
                    releases=len(self.acc.sigmas), update_norm=update_norm)
        return eps

    def spend_sample(self, sample_rate: float, steps: int) -> float:
        eps = self.acc.spend_sampled(self.sigma, sample_rate, steps)
        self.acc.save(self.ledger)
        self._audit("federated.dp_spend", sigma=self.sigma, clip=self.clip, sample_rate=sample_rate, steps=steps,
                    epsilon=eps, releases=len(self.acc.sampled))
        return eps

    def _audit(self, event: str, **details: Any) -> None:
        url = self.node_config.get("audit")
        AuditLog(str(url) if url else None).append(
            event, f"site:{self.site}", site=self.site, round=self.round, mode=self.mode if self.on else "off",
            delta=self.acc.delta, budget=self.budget, run_id=self.run_id, **details)
