"""Differential privacy at a site: client-level (clip the round's update, add Gaussian noise) and the accountant
of (eps, delta) for it and for sample-level DP-SGD (federated/dpsgd.py).

Each site clips its model update to L2 norm ``clip`` and adds N(0, (sigma * clip)^2) noise to every coordinate
before it leaves the site, so the release is a Gaussian mechanism with sensitivity ``clip`` and noise multiplier
``sigma`` regardless of what the server does. Releases compose by Renyi DP: a Gaussian mechanism has
RDP(alpha) = alpha / (2 sigma^2) per release. (eps, delta) follows by Opacus's conversion
(``opacus.accountants.analysis.rdp.get_privacy_spent``: Balle et al. 2020, Theorem 21):
min over alpha of RDP_total(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1), the figure
an Opacus user compares against. The older conversion of Mironov 2017 (Proposition 3),
min over alpha of RDP_total(alpha) + log(1/delta) / (alpha - 1), is looser (larger eps for the same releases: 6.63
against 5.88 for 300 DP-SGD steps at sigma 1, q = 64/1400, delta 1e-5) and is reported beside it. The site
refuses a release that would take its eps past the budget, so the budget is enforced where the data are.

The noise is drawn from a generator seeded with 64 bits of the operating system's CSPRNG (``secrets``), fresh for
every release and never stored or sent: the run seed, the site's name and the round number are all known to the
coordinator, and noise derived from them can be regenerated and subtracted (tests/federated/test_coordinator_attack.py).
Each coordinate is the sum of four draws halved, as Opacus's ``secure_mode`` does against floating-point attacks.
"""

from __future__ import annotations

import json
import math
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medsight.errors import ConfigError
from medsight.files import atomic_write_text

ACCOUNTANT = "RDP, Opacus conversion (Balle et al. 2020)"
LOOSER = "RDP, Mironov 2017 conversion"
ORDERS = tuple([1.0 + x / 10.0 for x in range(1, 100)] + list(range(12, 257)))


Sampled = tuple[float, float, int]  # (noise multiplier, Poisson sampling rate, steps) of a DP-SGD run


@dataclass
class GaussianAccountant:
    """RDP accountant of one site's releases: client-level Gaussian releases (noise multipliers ``sigmas``) and
    sample-level DP-SGD runs (``sampled``: noise multiplier, sampling rate, steps). Both compose by adding RDP,
    so one ledger holds a site's whole spend whichever kind of DP a run used."""

    delta: float
    sigmas: list[float] = field(default_factory=list)
    sampled: list[Sampled] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")

    def rdp(self, extra: list[float] | None = None, extra_sampled: list[Sampled] | None = None) -> np.ndarray:
        """Total RDP at each of ``ORDERS``: alpha / (2 sigma^2) per Gaussian release; for a subsampled Gaussian
        step, Opacus's computation of Mironov, Talwar & Zhang (2019)."""
        sigmas, sampled = self.sigmas + list(extra or []), self.sampled + list(extra_sampled or [])
        total = np.array(ORDERS) * sum(1.0 / (2.0 * s * s) for s in sigmas)
        if sampled:
            from opacus.accountants.analysis.rdp import compute_rdp

            for sigma, q, steps in sampled:
                total = total + np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(ORDERS)))
        return total

    def epsilon(self, extra: list[float] | None = None, extra_sampled: list[Sampled] | None = None) -> float:
        """eps at ``delta`` after the releases so far (plus ``extra`` ones), by Opacus's RDP conversion
        (``ACCOUNTANT``); 0 before any release. This is the figure the budget is checked against."""
        if not (self.sigmas or self.sampled or extra or extra_sampled):
            return 0.0
        from opacus.accountants.analysis.rdp import get_privacy_spent

        with warnings.catch_warnings():  # "optimal order is the largest alpha": a tiny eps, still a valid bound
            warnings.simplefilter("ignore")
            eps, _ = get_privacy_spent(orders=list(ORDERS), rdp=list(self.rdp(extra, extra_sampled)),
                                       delta=self.delta)
        return float(eps)

    def epsilon_mironov(self) -> float:
        """eps by Mironov 2017, Proposition 3 (``LOOSER``): what medsight reported before; always >= ``epsilon``."""
        if not (self.sigmas or self.sampled):
            return 0.0
        return float(min(r + math.log(1.0 / self.delta) / (a - 1.0) for a, r in zip(ORDERS, self.rdp())))

    def would_exceed(self, sigma: float, budget: float) -> bool:
        return self.epsilon([sigma]) > budget

    def would_exceed_sampled(self, run: Sampled, budget: float) -> bool:
        return self.epsilon(extra_sampled=[run]) > budget

    def spend_sampled(self, sigma: float, q: float, steps: int) -> float:
        if sigma <= 0 or not 0.0 < q <= 1.0 or steps < 1:
            raise ConfigError(f"DP-SGD needs noise > 0, a sampling rate in (0, 1] and steps >= 1; got {sigma}, {q}, "
                              f"{steps}")
        self.sampled.append((float(sigma), float(q), int(steps)))
        return self.epsilon()

    def spend(self, sigma: float) -> float:
        if sigma <= 0:
            raise ConfigError(f"the noise multiplier must be > 0 for an accounted release, got {sigma}")
        self.sigmas.append(float(sigma))
        return self.epsilon()

    # the ledger lives at the site, so the budget holds across runs of the federation
    @classmethod
    def load(cls, path: Path, delta: float) -> GaussianAccountant:
        if not path.exists():
            return cls(delta)
        state = json.loads(path.read_text())
        if float(state["delta"]) != delta:
            raise ConfigError(f"the privacy ledger {path} was kept at delta={state['delta']}, not {delta}; "
                              "keep delta fixed for a site or start a new ledger")
        return cls(float(state["delta"]), [float(s) for s in state["sigmas"]],
                   [(float(a), float(b), int(c)) for a, b, c in state.get("sampled", [])])

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"delta": self.delta, "sigmas": self.sigmas,
                                            "sampled": [list(r) for r in self.sampled]}))


def secure_generator() -> torch.Generator:
    """A generator seeded with 64 bits from the OS's CSPRNG: no seed, site or round anyone knows reproduces it."""
    return torch.Generator().manual_seed(secrets.randbits(64))


def gaussian_noise(shape: torch.Size | tuple[int, ...], sd: float, generator: torch.Generator) -> torch.Tensor:
    """N(0, sd^2) in float64 as the sum of four draws halved (Opacus ``secure_mode``, Holohan et al. 2021)."""
    total = torch.zeros(shape, dtype=torch.float64)
    for _ in range(4):
        total += torch.randn(shape, generator=generator, dtype=torch.float64)
    return total * (sd / 2.0)


def clip_and_noise(update: dict[str, torch.Tensor], clip: float, sigma: float,
                   generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """The update clipped to L2 norm ``clip`` over all float tensors, plus N(0, (sigma*clip)^2); returns the
    noised update and the norm before clipping. The noise comes from ``secure_generator()`` unless a generator is
    given (tests and benchmarks only: a site never passes one)."""
    keys = [k for k, v in update.items() if v.is_floating_point()]
    norm = float(torch.sqrt(sum((update[k].double() ** 2).sum() for k in keys))) if keys else 0.0
    scale = min(1.0, clip / max(norm, 1e-12))
    gen = generator if generator is not None else secure_generator()
    out = dict(update)
    for k in keys:
        noise = gaussian_noise(update[k].shape, sigma * clip, gen)
        out[k] = (update[k].double() * scale + noise).to(update[k].dtype)
    return out, norm


def weights_delta(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (new[k] - old[k]) if new[k].is_floating_point() else new[k] for k in new}


VAR_FLOOR = 1e-5  # BatchNorm's eps: the smallest running variance that keeps a normalised activation finite


def apply_delta(old: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``old + delta``; BatchNorm running variances are kept at or above ``VAR_FLOOR``: DP noise on a variance
    near 0 makes it negative and the network's output NaN. A clamp after the noise is post-processing, so it
    costs no privacy."""
    out = {k: (old[k] + delta[k]) if old[k].is_floating_point() else delta[k] for k in old}
    for k in out:
        if k.endswith("running_var"):
            out[k] = out[k].clamp_min(VAR_FLOOR)
    return out


def as_numpy(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}
