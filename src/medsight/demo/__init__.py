"""The stages of ``medsight demo``: each module exposes ``run(ctx: DemoContext) -> dict`` and adds to ctx.

Stages run in ``STAGES`` order; a stage reads what earlier stages left in ``ctx.results`` / ``ctx.paths``, so
later issues add a stage module without editing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# module names under medsight.demo, in the order they run
STAGES: tuple[str, ...] = ("segmentation", "classification", "safety", "pathology", "report")


@dataclass
class DemoContext:
    """What the demo stages share: where to write, the seed, the time budget, and what each stage produced."""

    out_dir: Path
    seed: int = 0
    quiet: bool = False
    fast: bool = False  # a much smaller run, for tests
    results: dict[str, Any] = field(default_factory=dict)  # stage name -> summary numbers
    paths: dict[str, Path] = field(default_factory=dict)  # artifact name -> path written
