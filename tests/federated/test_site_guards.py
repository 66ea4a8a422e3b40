"""What a site decides and what the run refuses, checked in process on medsight's real ServerApp and ClientApp
(tests/federated/test_secagg.py's InProcessGrid) and through the CLI:

- the site's privacy policy (node config) against run configs asking for less: refused, audited, named in the run's
  record; the site's delta is its ledger's;
- pre-flight: a site with no rows, one class, unreadable images or too few rows is named with its reason before
  round 1; fewer than --min-sites passing: exit 2, one line, no model file, nothing registered;
- a federation that did not learn is not packaged unless forced.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from medsight.audit.log import AuditLog
from medsight.federated.launch import RUN_DEFAULTS
from medsight.federated.preflight import site_preflight
from medsight.federated.site_privacy import SitePolicy, SitePrivacy
from medsight.federated.toy import make_sites
from tests.federated.test_flower_run import require_flower


def _ask(**over: Any) -> dict[str, Any]:
    return {"dp-noise": 1.0, "dp-clip": 1.0, "dp-delta": 1e-5, "dp-mode": "client", "dp-epsilon": 10.0, **over}


@pytest.mark.parametrize("node,asked,why", [
    ({"epsilon-budget": 8.0}, {"dp-noise": 0.0}, "requires differential privacy (eps budget 8)"),
    ({"dp-min-noise": 1.5}, {"dp-noise": 0.0}, "requires differential privacy (min noise 1.5)"),
    ({"dp-min-noise": 1.5}, {"dp-noise": 1.0}, "noise multiplier 1 is below the site's minimum 1.5"),
    ({"dp-modes": "client"}, {"dp-mode": "sample"}, "dp-mode 'sample' is not allowed by the site (allowed: client)"),
    ({"dp-max-clip": 0.5}, {"dp-clip": 1.0}, "clip 1 is above the site's maximum 0.5"),
    ({"dp-delta": 1e-6}, {"dp-delta": 1e-5}, "delta 1e-05 is larger than the site's 1e-06"),
    ({}, {"dp-delta": 1e-3}, "delta 0.001 is larger than the site's 1e-05"),  # a site naming none keeps 1e-5
])
def test_the_site_refuses_a_run_asking_for_less_privacy(node: dict, asked: dict, why: str) -> None:
    assert why in SitePolicy.from_node_config(node).refusal(_ask(**asked))


@pytest.mark.parametrize("node,asked", [
    ({}, {"dp-noise": 0.0}),  # a site with no policy accepts a plain run, as before
    ({"epsilon-budget": 8.0, "dp-min-noise": 1.0, "dp-delta": 1e-5, "dp-max-clip": 1.0}, {"dp-noise": 2.0}),
    ({"dp-delta": 1e-5}, {"dp-delta": 1e-7, "dp-clip": 0.1}),  # more privacy than asked for is fine
])
def test_the_site_accepts_a_run_asking_for_as_much_or_more(node: dict, asked: dict) -> None:
    assert SitePolicy.from_node_config(node).refusal(_ask(**asked)) is None


def test_the_site_accounts_at_its_own_delta_and_budget(tmp_path) -> None:
    nc = {"ledger": str(tmp_path / "l.json"), "audit": str(tmp_path / "a.db"), "dp-delta": 1e-6,
          "epsilon-budget": 6.0}
    dp = SitePrivacy(nc, _ask(**{"dp-delta": 1e-8, "dp-epsilon": 50.0}), "A", 1, 1)
    assert dp.acc.delta == 1e-6 and dp.budget == 6.0  # the run's looser budget does not raise the site's
    assert SitePrivacy(nc, _ask(**{"dp-epsilon": 2.0}), "A", 1, 1).budget == 2.0  # a stricter one applies
    assert dp.refusal(1, 1.0) is None  # one sigma-1 release at delta 1e-6: 5.3 (Opacus conversion) <= 6
    dp.spend_client(0.3)
    assert "past the budget 6" in dp.refusal(1, 1.0)
    rec = [r.details for r in AuditLog(str(tmp_path / "a.db")).records()]
    assert [r["accountant"] for r in rec] == ["RDP, Opacus conversion (Balle et al. 2020)"] * 2
    assert rec[0]["delta"] == 1e-6 and rec[0]["epsilon"] < rec[0]["epsilon_mironov"]


def test_node_config_writes_the_sites_policy(tmp_path) -> None:
    from click.testing import CliRunner

    from medsight.cli.federated import federated

    (tmp_path / "m.csv").write_text("image,site\nx.nii.gz,A\n")
    r = CliRunner().invoke(federated, ["node-config", "--site", "A", "--manifest", str(tmp_path / "m.csv"),
                                       "--epsilon", "8", "--min-noise", "1.2", "--delta", "1e-6",
                                       "--dp-modes", "client"])
    assert r.exit_code == 0, r.output
    words = dict(w.split("=", 1) for w in r.output.split())
    assert words["epsilon-budget"] == "8.0" and words["dp-min-noise"] == "1.2" and words["dp-delta"] == "1e-06"
    assert words["dp-modes"] == '"client"' and "dp-max-clip" not in words
    for body, why in (("image,site\n", "no rows"), ("image,site\nx.nii.gz,B\n", "no row of its site column is 'A'")):
        (tmp_path / "m.csv").write_text(body)  # a typo caught when the site is set up, not at the first round
        r = CliRunner().invoke(federated, ["node-config", "--site", "A", "--manifest", str(tmp_path / "m.csv")],
                               standalone_mode=False)
        assert why in str(r.exception), r.output


# --- pre-flight --------------------------------------------------------------------------------------------------

def _bad_sites(root: Path) -> dict[str, Path]:
    """A good site A and four bad ones: no rows, one class, an unreadable image, too few rows."""
    sites = make_sites(root, n=40, sites=("A", "E", "O", "U", "S"))
    sites["E"].write_text(sites["E"].read_text().splitlines()[0] + "\n")  # header only
    rows = sites["O"].read_text().splitlines()
    sites["O"].write_text("\n".join([rows[0]] + [r[:-1] + "0" for r in rows[1:]]) + "\n")  # every label 0
    (sites["U"].parent / "img003.png").write_bytes(b"not a png at all")
    rows = sites["S"].read_text().splitlines()
    sites["S"].write_text("\n".join(rows[:3] + rows[-2:]) + "\n")  # 2 training rows, 2 held out
    return sites


def test_preflight_names_what_is_wrong_with_each_site(tmp_path) -> None:
    sites = _bad_sites(tmp_path)
    rc = {**RUN_DEFAULTS}
    reasons = {s: site_preflight(rc, {"site": s, "manifest": str(p)})[1] for s, p in sites.items()}
    assert reasons["A"] is None
    assert reasons["E"].endswith("manifest has no rows; add one row per case")
    assert "one class only" in reasons["O"]
    assert "img003.png" in reasons["U"]
    assert "2 training rows/cases/slides, fewer than the federation's minimum 4" in reasons["S"]
    task, none = site_preflight(rc, {"site": "A", "manifest": str(sites["A"])})
    assert none is None and task.n_train == 28


def test_cli_exits_2_before_any_process_when_too_few_sites_pass(tmp_path, capsys, monkeypatch) -> None:
    from medsight.cli.main import main
    from medsight.federated import launch

    sites = _bad_sites(tmp_path / "data")
    monkeypatch.setattr(launch, "Federation", None)  # a process start would fail loudly
    registry = tmp_path / "registry.db"
    monkeypatch.setenv("MEDSIGHT_REGISTRY_URL", f"sqlite:///{registry}")
    with pytest.raises(SystemExit) as exit_:
        main(["federated", "run", "--site", f"A={sites['A']}", "--site", f"O={sites['O']}", "-o",
              str(tmp_path / "out"), "--package", str(tmp_path / "pkg")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "site O:" in err and "one class only" in err and "1 of 2 sites can train" in err and "site A" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "pkg").exists() and not registry.exists()


# --- the real ServerApp and ClientApp, in process ----------------------------------------------------------------

def _federate(sites: dict[str, Path], out: Path, node: dict[str, dict] | None = None, **over: Any) -> dict:
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from medsight.federated import client, server
    from tests.federated.test_secagg import InProcessGrid

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    grid = InProcessGrid(client.app, sites)
    for ctx in grid.contexts.values():
        ctx.node_config.update({"audit": str(out.parent / f"{out.name}-audit.db"),
                                **(node or {}).get(str(ctx.node_config["site"]), {})})
    rc = {**RUN_DEFAULTS, "rounds": 1, "local-steps": 2, "out-dir": str(out), **over}
    server.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc))
    return json.loads((out / "federation.json").read_text())


def test_a_refusing_site_is_named_in_the_record_and_its_audit(tmp_path) -> None:
    require_flower()
    sites = make_sites(tmp_path / "data", n=40, sites=("A", "B"))
    node = {"B": {"dp-min-noise": 2.0}}
    res = _federate(sites, tmp_path / "out", node, **{"dp-noise": 1.0})
    assert res["refusals"] == [{"round": 1, "site": "B",
                                "reason": "the run's noise multiplier 1 is below the site's minimum 2"}]
    assert res["status"] == "no_round_aggregated" and not (tmp_path / "out" / "model.pt").exists()
    assert res["rounds"][0]["contributors"] == ["A"] and not res["rounds"][0]["aggregated"]
    log = [r.details for r in AuditLog(str(tmp_path / "out-audit.db")).records()]
    assert [(d["site"], d.get("reason")) for d in log if d["site"] == "B"] == \
        [("B", "the run's noise multiplier 1 is below the site's minimum 2")]
    # A spent and says so: eps (Opacus's conversion) with its delta and Mironov's looser figure
    assert res["privacy"]["A"]["epsilon"] == pytest.approx(4.7285, abs=1e-3) and res["privacy"]["A"]["delta"] == 1e-5
    assert res["privacy"]["A"]["epsilon-mironov"] == pytest.approx(5.2985, abs=1e-3) and "B" not in res["privacy"]
    # the site's ledger file is where the node config says, and holds A's release only
    assert json.loads((sites["A"].parent / ".ledger-A.json").read_text())["sigmas"] == [1.0]
    assert not (sites["B"].parent / ".ledger-B.json").exists()


def test_server_preflight_leaves_out_a_bad_site_or_stops_the_run(tmp_path) -> None:
    require_flower()
    sites = _bad_sites(tmp_path / "data")
    two = {"A": sites["A"], "O": sites["O"]}
    res = _federate(two, tmp_path / "stop", **{"min-sites": 2})
    assert res["status"] == "preflight_failed" and res["rounds"] == []
    assert list(res["preflight"]) == ["O"] and "one class only" in res["preflight"]["O"]
    assert not (tmp_path / "stop" / "model.pt").exists()
    res = _federate(two, tmp_path / "go", **{"min-sites": 1})
    assert res["status"] == "trained" and list(res["preflight"]) == ["O"]
    (r1,) = res["rounds"]
    assert r1["sites_asked"] == 1 and r1["contributors"] == ["A"] and set(r1["evaluate"]) == {"A"}
    assert set(res["initial"]["evaluate"]) == {"A"} and 0.0 <= res["initial"]["global"]["auc"] <= 1.0


def test_identical_runs_differ_with_dp_and_are_identical_without(tmp_path) -> None:
    require_flower()
    sites = make_sites(tmp_path / "data", n=40, sites=("A", "B"))
    w = {}
    # (DP-SGD's fresh draws: tests/federated/test_dpsgd.py, on the function the ClientApp calls)
    for name, sigma in (("dp1", 1.0), ("dp2", 1.0), ("plain1", 0.0), ("plain2", 0.0)):
        _federate(sites, tmp_path / name, **{"dp-noise": sigma, "dp-epsilon": 1e6})
        w[name] = torch.load(tmp_path / name / "model.pt")
    assert any(not torch.equal(w["dp1"][k], w["dp2"][k]) for k in w["dp1"])
    assert all(torch.equal(w["plain1"][k], w["plain2"][k]) for k in w["plain1"])


# --- a federation that did not learn ----------------------------------------------------------------------------

def _record(out: Path, initial: float, final: dict[str, float]) -> None:
    from medsight.federated.site import small_classifier

    out.mkdir()
    torch.save(small_classifier().state_dict(), out / "model.pt")
    ev = {s: {"auc": a, "ece": 0.1, "n": 10.0} for s, a in final.items()}
    finite = [a for a in final.values() if math.isfinite(a)]
    rnd = {"round": 1, "train": {s: {} for s in final}, "evaluate": ev, "contributors": sorted(final),
           "aggregated": True, "aggregate_sha256": "ab" * 32,
           "global": {"auc": sum(finite) / len(finite) if finite else math.nan, "n": 10.0 * len(finite)}}
    (out / "federation.json").write_text(json.dumps({
        "strategy": "fedavg", "rounds": [rnd], "initial": {"global": {"auc": initial}},
        "config": {"dp-noise": 0.0, "dp-clip": 1.0, "dp-delta": 1e-5, "dp-epsilon": 10.0, "backbone": "small"}}))


@pytest.mark.parametrize("initial,final,why", [
    (0.5, {"A": 0.9, "B": math.nan}, "the final validation auc is undefined at site(s) B"),
    (0.7, {"A": 0.6, "B": 0.62}, "the final pooled validation auc 0.610 is below the initial model's 0.700"),
])
def test_a_federation_that_did_not_learn_is_not_packaged(tmp_path, initial: float, final: dict, why: str) -> None:
    from medsight.federated.package import NotLearnedError, package_federation

    _record(tmp_path / "run", initial, final)
    with pytest.raises(NotLearnedError, match=why.replace("(", r"\(").replace(")", r"\)")):
        package_federation(tmp_path / "run", tmp_path / "pkg", "fed", register=False)
    assert not (tmp_path / "pkg").exists()
    pkg = package_federation(tmp_path / "run", tmp_path / "pkg", "fed", register=False, force=True)
    assert pkg.extra["federated"]["forced"] == why


def test_a_federation_that_learned_is_packaged_with_its_privacy_record(tmp_path) -> None:
    from medsight.federated.package import package_federation

    _record(tmp_path / "run", 0.55, {"A": 0.8, "B": 0.7})
    pkg = package_federation(tmp_path / "run", tmp_path / "pkg", "fed", register=False)
    fed = pkg.extra["federated"]
    assert "forced" not in fed and fed["initial"] == {"auc": 0.55}
    assert fed["privacy"]["accountant"] == "RDP, Opacus conversion (Balle et al. 2020)"


def test_preflight_of_mil_and_segmentation_sites(tmp_path) -> None:
    """MIL: a site whose slides lack features, or whose feature dimension is not the federation's, is named;
    segmentation: a site whose training label maps are all background is named."""
    import numpy as np

    from medsight.data.dataset import load_dataset
    from medsight.data.fingerprint import compute_fingerprint
    from medsight.io.nifti import read_nifti, write_nifti
    from medsight.plan.planner import make_plan
    from medsight.synthetic.toy import make_toy_dataset
    from tests.federated.test_federated_tasks import _write_mil_site

    _write_mil_site(tmp_path / "mil", "A", 0.0, 16, np.random.default_rng(0))
    labels = tmp_path / "mil" / "labels.csv"
    rc = {**RUN_DEFAULTS, "task": "mil", "feature-dim": 16}
    assert site_preflight(rc, {"site": "A", "manifest": str(labels)})[1] is None
    assert "dimension [16]" in site_preflight({**rc, "feature-dim": 8}, {"site": "A", "manifest": str(labels)})[1]
    (tmp_path / "mil" / "features" / "A-s03" / "features.npz").unlink()
    assert "no features for slide A-s03" in site_preflight(rc, {"site": "A", "manifest": str(labels)})[1]

    root = make_toy_dataset(tmp_path / "seg", n_cases=12, shape=(20, 16, 12), channels=2)
    plan = make_plan(compute_fingerprint(load_dataset(root)), memory_gb=0.02, base_filters=8, epochs=3,
                     iterations_per_epoch=4)
    rc = {**RUN_DEFAULTS, "task": "segmentation", "plan": plan.to_json(), "configuration": "3d"}
    assert site_preflight(rc, {"site": "site_A", "manifest": str(root)})[1] is None
    for case in load_dataset(root).cases:
        if case.site == "site_B":
            lab = read_nifti(case.label)
            write_nifti(lab.with_array(np.zeros_like(lab.array), "test: background only"), case.label)
    assert site_preflight(rc, {"site": "site_B", "manifest": str(root)})[1] == \
        "no training case has any labelled foreground"


def test_the_cli_says_which_site_refused_and_writes_no_model(tmp_path, capsys, monkeypatch) -> None:
    """`medsight federated run` over the in-process federation (the launcher's processes replaced): site B's
    policy refuses the run's noise, the CLI prints the refusal and exits 2 with no model."""
    require_flower()
    from medsight.cli.main import main
    from medsight.federated import launch

    sites = make_sites(tmp_path / "data", n=40, sites=("A", "B"))

    def in_process(sites_: dict, out_dir: Path, config: dict, **_: Any) -> dict:
        return _federate(sites_, Path(out_dir), {"B": {"dp-min-noise": 2.0}}, **config)

    monkeypatch.setattr(launch, "run_federation", in_process)
    with pytest.raises(SystemExit) as exit_:
        main(["federated", "run", "--site", f"A={sites['A']}", "--site", f"B={sites['B']}", "--rounds", "1",
              "--local-steps", "2", "--dp-noise", "1.0", "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    cap = capsys.readouterr()
    assert "site B refused round 1: the run's noise multiplier 1 is below the site's minimum 2" in cap.out
    assert "site A privacy ledger: eps 4.729 at delta 1e-05 (RDP, Opacus conversion; Mironov 2017: 5.299)" in cap.out
    assert cap.err.strip() == ("medsight: error: no round aggregated any site's update: no model written to "
                               f"{tmp_path / 'out'}")
    assert not (tmp_path / "out" / "model.pt").exists()
