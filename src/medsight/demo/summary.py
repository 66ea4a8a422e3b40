"""The table ``medsight demo`` prints at the end: each stage's headline figures, one row each.

Stages return nested dicts (summary.json keeps all of it); the table flattens them to ``a / b`` keys and keeps
scalars and short lists, so a reader sees the numbers without scrolling through JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

MAX_ROWS_PER_STAGE = 24
SKIP_KEYS = {"example_decisions", "scores", "heatmaps"}


def rows(results: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(stage, figure, value) rows from ``ctx.results``."""
    for stage, res in results.items():
        if not isinstance(res, Mapping):
            yield ("demo", stage, _fmt(res))
            continue
        for n, (key, value) in enumerate(_flatten(res)):
            if n == MAX_ROWS_PER_STAGE:
                yield (stage, "...", "(more in summary.json)")
                break
            yield (stage, key, _fmt(value))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in d.items():
        if key in SKIP_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name} / ")
        elif isinstance(value, (list, tuple)) and len(value) > 3:
            continue
        else:
            yield name, value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "-" if value is None else str(value)


def is_below_target(value: str) -> bool:
    return value.startswith("below target")


def print_table(results: Mapping[str, Any]) -> None:
    """Render the rows with rich (stage names shown once per block)."""
    from rich.console import Console
    from rich.table import Table

    import sys

    table = Table(title="medsight demo: summary", show_lines=False)
    table.add_column("stage", style="bold", no_wrap=True)
    table.add_column("figure", no_wrap=True)
    table.add_column("value", style="cyan", overflow="fold")
    last = None
    for stage, key, value in rows(results):
        # a model that missed its own validation target is a red line, not one figure among others
        table.add_row(stage if stage != last else "", key, value, end_section=False,
                      style="bold red" if is_below_target(value) else None)
        last = stage
    # a log file or pipe gets a fixed width wide enough for the longest figure names (rich would pick 80)
    Console(width=None if sys.stdout.isatty() else 132).print(table)
