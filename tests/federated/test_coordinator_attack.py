"""The coordinator plays the attacker: can it regenerate a site's DP noise and subtract it?

The site's real ClientApp ``train`` runs in process on a message the coordinator built. The coordinator knows
everything it sees: the run config (seed included), the global weights it sent, the site's name (in every reply),
the round number and the noised weights that came back. It rebuilds the noise from every generator those public
values could seed, with the recipe medsight used before (``_site_seed(site, seed) + 7919 * round``, one randn per
tensor) and with today's (four draws halved), and subtracts it. The test then measures how close the recovered
update is to the site's true clipped update (recomputed here: training is deterministic from the public seed, and
the clip is worked by hand).

The bound. If a guessed noise g is independent of the site's noise n (s = sigma * clip, d coordinates), the error
e = n - g is N(0, 2 s^2 I_d) independent of the true update u, so z = <e, u> / (sqrt(2) s |u|) is N(0, 1) and
|e|^2 / (2 s^2) is chi-square with d degrees of freedom. Then, with |z| <= 6 and |e|^2 / (2 s^2) >= d - 6 sqrt(2d)
(Laurent & Massart 2000: P(X <= d - 2 sqrt(d x)) <= e^-x, x = 18), the cosine between the recovered update u + e
and u is at most (|u|^2 + 6 sqrt(2) s |u|) / (|u| sqrt(|u|^2 - 12 sqrt(2) s |u| + 2 s^2 (d - 6 sqrt(2d)))).
A guess that is no better than fresh noise exceeds it with probability below 2e-8 (2e-9 + 1.5e-8); every fresh
draw here stays under it. Medsight's code before this test (noise seeded from the run seed, site and round)
recovered the update with cosine 1.000000 (checked against that commit; docs/federated.md).
"""

from __future__ import annotations

import math
import secrets
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from medsight.engine.loop import local_update
from medsight.federated.launch import RUN_DEFAULTS
from medsight.federated.privacy import weights_delta
from medsight.federated.tasks import site_task
from medsight.federated.toy import make_sites
from tests.federated.test_flower_run import require_flower

SEED, ROUND, SIGMA, CLIP, STEPS = 7, 2, 1.0, 1.0, 3


def _flat(sd: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    return torch.cat([sd[k].double().flatten() for k in keys])


def _site_train(manifest: Path, tmp: Path, glob: dict[str, torch.Tensor], sigma: float) -> dict[str, torch.Tensor]:
    """One round of the site's real ClientApp ``train``, on the message the coordinator sends."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from medsight.federated import client

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    cfg = {"local-steps": STEPS, "seed": SEED, "proximal-mu": 0.0, "dp-noise": sigma, "dp-clip": CLIP,
           "dp-delta": 1e-5, "dp-epsilon": 1e9, "dp-mode": "client", "server-round": ROUND}
    msg = Message(RecordDict({"arrays": ArrayRecord({k: v.clone() for k, v in glob.items()}),
                              "config": ConfigRecord(cfg)}), dst_node_id=1, message_type=MessageType.TRAIN)
    nc = {"site": "A", "manifest": str(manifest), "ledger": str(tmp / "ledger.json"), "audit": str(tmp / "a.db")}
    ctx = Context(run_id=1, node_id=1, node_config=nc, state=RecordDict(), run_config={"seed": SEED})
    reply = client.train(msg, ctx)
    return reply.content["arrays"].to_torch_state_dict()


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_flower()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("attack")
    manifest = make_sites(tmp / "data", n=40, sites=("A",))["A"]
    torch.manual_seed(0)
    task = site_task({**RUN_DEFAULTS, "seed": SEED}, {"site": "A", "manifest": str(manifest)})
    glob = {k: v.detach().clone() for k, v in task.build_model().state_dict().items()}
    return {"tmp": tmp, "manifest": manifest, "glob": glob, "task": task}


def _true_clipped_update(setting: dict[str, Any]) -> dict[str, torch.Tensor]:
    """What the site trained, recomputed from public values: its training seed is the run seed and its name."""
    from medsight.federated.client import _site_seed

    new, _, _ = local_update(setting["task"], setting["glob"], STEPS, _site_seed("A", SEED), ROUND)
    d = weights_delta(new, setting["glob"])
    keys = [k for k, v in d.items() if v.is_floating_point()]
    norm = math.sqrt(sum(float((d[k].double() ** 2).sum()) for k in keys))
    return {k: d[k].double() * min(1.0, CLIP / norm) for k in keys}


def _public_generators() -> dict[str, int]:
    """Every seed the coordinator can form from what it sees (run seed, site name, round)."""
    site_seed = (SEED * 1_000_003 + zlib.crc32(b"A")) % (2**31)  # medsight's per-site seed, from public values
    return {"site seed + 7919 round (old client-level recipe)": site_seed + 7919 * ROUND,
            "seed * 1000 + round (old DP-SGD recipe)": SEED * 1_000 + ROUND,
            "seed * 1000 + round + 1": SEED * 1_000 + ROUND + 1, "site seed": site_seed, "run seed": SEED,
            "round": ROUND, "seed + round": SEED + ROUND, "crc32(site)": zlib.crc32(b"A"), "zero": 0}


def _noise(keys: list[str], shapes: dict[str, torch.Size], gen: torch.Generator, draws: int) -> torch.Tensor:
    """The noise a recipe would add: one randn per tensor (old), or four halved (Opacus secure_mode, today)."""
    parts = []
    for k in keys:
        x = sum(torch.randn(shapes[k], generator=gen, dtype=torch.float64) for _ in range(draws))
        parts.append((x * (SIGMA * CLIP) / math.sqrt(draws)).flatten())
    return torch.cat(parts)


def cosine_bound(u_norm: float, s: float, d: int) -> float:
    """The largest cosine a guess independent of the site's noise reaches except with probability < 2e-8."""
    top = u_norm**2 + 6 * math.sqrt(2) * s * u_norm
    low = u_norm**2 - 12 * math.sqrt(2) * s * u_norm + 2 * s**2 * (d - 6 * math.sqrt(2 * d))
    return top / (u_norm * math.sqrt(max(low, 1e-300)))


def test_the_coordinator_cannot_rebuild_the_noise(setting: dict[str, Any]) -> None:
    glob = setting["glob"]
    released = _site_train(setting["manifest"], setting["tmp"], glob, SIGMA)
    u_sd = _true_clipped_update(setting)
    keys = list(u_sd)
    u = _flat(u_sd, keys)
    observed = _flat(weights_delta(released, glob), keys)  # what the coordinator computes from the reply
    d, s = u.numel(), SIGMA * CLIP
    bound = cosine_bound(float(u.norm()), s, d)
    assert bound < 0.3  # the bound is far from the cosine 1 of a successful reconstruction

    def cos(recovered: torch.Tensor) -> float:
        return float(recovered @ u / (recovered.norm() * u.norm()))

    shapes = {k: glob[k].shape for k in keys}
    fresh = [cos(observed - _noise(keys, shapes, torch.Generator().manual_seed(secrets.randbits(64)), 4))
             for _ in range(5)]
    assert max(fresh) < bound  # fresh noise: the yardstick the attack must not beat
    attacks = {f"{name}, {draws} draw(s)": cos(observed - _noise(keys, shapes, torch.Generator().manual_seed(seed),
                                                                 draws))
               for name, seed in _public_generators().items() for draws in (1, 4)}
    beaten = {name: round(c, 6) for name, c in attacks.items() if c >= bound}
    assert not beaten, f"the coordinator rebuilt the noise: cosine {beaten} >= {bound:.3f} (fresh: {max(fresh):.3f})"
    # and the release is the clipped update plus noise of the right size: |observed - u|^2 / s^2 ~ chi2(d)
    chi2 = float(((observed - u) ** 2).sum()) / s**2
    assert d - 6 * math.sqrt(2 * d) <= chi2 <= d + 6 * math.sqrt(2 * d) + 36  # Laurent-Massart, x = 18


def test_dp_releases_differ_between_identical_runs_and_plain_training_does_not(setting: dict[str, Any]) -> None:
    """Same message, same node, same seed: DP on gives two different releases; DP off gives bit-identical
    weights, equal to the local update recomputed from the seed."""
    glob = setting["glob"]
    a = _site_train(setting["manifest"], setting["tmp"], glob, SIGMA)
    b = _site_train(setting["manifest"], setting["tmp"], glob, SIGMA)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    p = _site_train(setting["manifest"], setting["tmp"], glob, 0.0)
    q = _site_train(setting["manifest"], setting["tmp"], glob, 0.0)
    assert all(torch.equal(p[k], q[k]) for k in p)
    from medsight.federated.client import _site_seed

    ref, _, _ = local_update(setting["task"], glob, STEPS, _site_seed("A", SEED), ROUND)
    assert all(torch.equal(p[k], ref[k]) for k in p)
