"""The layer list of medsight's packages, and the import graph read from the source.

A module may import only from its own layer or below (docs/architecture.md), the packages of one layer import one
another without a cycle, and every import is absolute. ``tests/test_layers.py`` checks the graph against this list
and ``python -m medsight.layers`` prints the Mermaid diagram in docs/architecture.md (``--write`` replaces it
there), so the picture is generated from the code rather than drawn by hand.
"""

from __future__ import annotations

import ast
import functools
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


@functools.cache
def _parsed(text: str, filename: str) -> ast.Module:
    """The syntax tree of one file's text, parsed once (the checks below each read every file)."""
    return ast.parse(text, filename=filename)


def _tree(path: Path) -> ast.Module:
    return _parsed(path.read_text(), str(path))


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
        for node in ast.walk(_tree(path)):
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


def relative_imports(root: Path = ROOT) -> list[str]:
    """Every ``from . import x`` / ``from ..y import z``, as readable lines: the layer check reads absolute names only,
    so a relative import would hide an edge from it."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                bad.append(f"{path.relative_to(root)}:{node.lineno}: relative import "
                           f"{'.' * node.level}{node.module or ''}")
    return bad


def import_cycles(root: Path = ROOT) -> list[str]:
    """One line per cycle of top-level packages (a strongly connected component with more than one member), with
    the files behind each edge inside it: packages that import each other can only be understood, tested and
    moved together, so inside a layer the imports must still form a DAG."""
    graph: dict[str, set[str]] = {}
    files: dict[tuple[str, str], set[str]] = {}
    for rel, src, dst in import_edges(root):
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
        files.setdefault((src, dst), set()).add(rel)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                members = set(comp)
                edges = [f"{a} -> {b} ({', '.join(sorted(files[(a, b)]))})" for a in sorted(members)
                         for b in sorted(graph[a] & members)]
                out.append(f"cycle {sorted(members)}: " + "; ".join(edges))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


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


DOC = ROOT.parents[1] / "docs" / "architecture.md"


def document_with_graph(text: str, graph: str) -> str:
    """``text`` (docs/architecture.md) with its first Mermaid block replaced by ``graph``."""
    start = text.index("```mermaid\n") + len("```mermaid\n")
    end = text.index("```", start)
    return text[:start] + graph + "\n" + text[end:]


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:  # regenerate the graph in docs/architecture.md in place
        from medsight.files import atomic_write_text

        atomic_write_text(DOC, document_with_graph(DOC.read_text(), mermaid()))
    else:
        print(mermaid())
