"""The package layers of docs/architecture.md hold: no module imports from a layer above its own."""

from __future__ import annotations

from medsight.layers import LAYERS, ROOT, import_edges, layer_of, upward_imports


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
