"""The layer list of medsight's packages, and the import graph read from the source.

A module may import only from its own layer or below (docs/architecture.md). ``tests/test_layers.py`` checks the
graph against this list and ``python -m medsight.layers`` prints the Mermaid diagram in docs/architecture.md, so the
picture is generated from the code rather than drawn by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

# bottom to top; a package may import from its own layer or any layer below it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("image", "errors", "files", "layers"),
    ("io", "deid", "data", "plan", "nets", "metrics", "audit"),
    ("engine", "package"),
    ("segmentation", "classification", "pathology", "safety", "explain", "synthetic", "registration", "pretrain"),
    ("report", "serve", "federated", "demo"),
    ("cli",),
)

ROOT = Path(__file__).resolve().parent


def layer_of(package: str) -> int:
    """The layer index of a top-level medsight package or module (KeyError for one missing from LAYERS)."""
    for i, names in enumerate(LAYERS):
        if package in names:
            return i
    raise KeyError(package)


def _top(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "medsight" and len(parts) > 1 else None


def import_edges(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(importing file, importing top-level package, imported top-level package) for every medsight import."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        src = rel.parts[0].removesuffix(".py") if len(rel.parts) > 0 else ""
        if src == "__init__":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                if node.module == "medsight":
                    targets = [f"medsight.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                dst = _top(t)
                if dst and dst != src and dst != "__version__":
                    edges.append((str(rel), src, dst))
    return edges


def upward_imports(root: Path = ROOT) -> list[str]:
    """Every import that goes from a lower layer to a higher one, as readable lines."""
    bad = []
    for rel, src, dst in import_edges(root):
        if layer_of(dst) > layer_of(src):
            bad.append(f"{rel}: {src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})")
    return bad


def mermaid(root: Path = ROOT) -> str:
    """The package graph as a Mermaid flowchart, one subgraph per layer (top layer first)."""
    edges = sorted({(s, d) for _, s, d in import_edges(root)})
    present = {p.name.removesuffix(".py") for p in root.iterdir() if p.name != "__init__.py"}
    lines = ["flowchart TB"]
    for i in reversed(range(len(LAYERS))):
        names = [n for n in LAYERS[i] if n in present]
        lines.append(f"  subgraph L{i}[layer {i}]")
        lines += [f"    {n}" for n in names]
        lines.append("  end")
    lines += [f"  {s} --> {d}" for s, d in edges]
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
