"""The package layers of docs/architecture.md hold: no module imports from a layer above its own, no two packages
import each other (directly or round a longer cycle), no relative import hides an edge from the check."""

from __future__ import annotations

from medsight.layers import (DOC, LAYERS, ROOT, document_with_graph, import_cycles, import_edges, layer_of, mermaid,
                             relative_imports, upward_imports)


def test_every_package_is_in_the_layer_list():
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir()
                if p.name != "__init__.py" and (p.suffix == ".py" or (p / "__init__.py").exists())}
    listed = {n for names in LAYERS for n in names}
    assert packages - listed == set(), "add new packages to medsight.layers.LAYERS"


def test_no_upward_import():
    assert upward_imports() == []


def test_the_checker_sees_a_planted_upward_import(tmp_path):
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "x.py").write_text("from medsight.cli.main import main\n")
    (tmp_path / "cli").mkdir()
    assert upward_imports(tmp_path) == ["io/x.py: io (layer 1) imports cli (layer 5)"]
    assert layer_of("cli") > layer_of("io")
    assert import_edges(tmp_path) == [("io/x.py", "io", "cli")]


def test_no_import_cycle_between_packages():
    assert import_cycles() == []


def test_no_relative_import():
    assert relative_imports() == []


def test_only_the_demo_uses_the_simulators():
    """Product code must not depend on the synthetic data generators (they exist for the demo and the tests)."""
    users = sorted({src for _, src, dst in import_edges() if dst == "synthetic"})
    assert users == ["demo"]


def test_the_checker_sees_a_planted_cycle_and_relative_import(tmp_path):
    for pkg, body in (("data", "from medsight.plan.plan import Plan\n"),
                      ("plan", "from medsight.data.x import y\nfrom . import z\n")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "m.py").write_text(body)
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "m.py").write_text("from medsight.data.m import q\n")  # into the cycle, not part of it
    assert import_cycles(tmp_path) == ["cycle ['data', 'plan']: data -> plan (data/m.py); plan -> data (plan/m.py)"]
    assert relative_imports(tmp_path) == ["plan/m.py:2: relative import ."]
    (tmp_path / "data" / "m.py").write_text("import numpy\n")
    assert import_cycles(tmp_path) == []


def test_the_architecture_graph_in_the_docs_is_generated_from_the_code():
    text = DOC.read_text()
    assert document_with_graph(text, mermaid()) == text, \
        "docs/architecture.md is stale: run `python -m medsight.layers --write`"
    for package in ("serve", "federated", "pathology", "registration", "pretrain"):
        assert f"\n    {package}\n" in text and f"  {package} --> " in text
