"""Model card: what a model is for, what it was trained on, how well it does where, and where not to use it.

A plain dataclass that travels as JSON (``model_card.json`` beside the weights in the registry) and renders to
Markdown for reports. Fields follow Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019), trimmed to
what a clinical imaging model needs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from medsight.errors import ConfigError

CARD_VERSION = 1


@dataclass
class ModelCard:
    """Human-readable facts about one model version; every field is JSON-serialisable."""

    name: str = ""
    version: str = ""
    task: str = ""  # "segmentation" | "classification" | ...
    intended_use: str = ""
    out_of_scope_use: str = ""
    users: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # sources, sites, n cases, manifest hash, date range
    preprocessing: list[str] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    # performance: {"overall": {...}, "by_site": {site: {...}}, "by_subgroup": {attr: {group: {...}}}}
    performance: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    limitations: list[str] = field(default_factory=list)
    ethical_considerations: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from a dict; unknown keys are kept under ``extra`` so newer cards still load."""
        if not isinstance(data, dict):
            raise ConfigError(f"model card must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        card = cls(**kwargs)
        if unknown:
            card.extra = {**card.extra, **unknown}
        return card

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise ConfigError(f"model card is not valid JSON ({err.msg} at line {err.lineno})") from err

    def to_markdown(self) -> str:
        """A Markdown document with one section per field that has content."""
        title = f"# Model card: {self.name or 'unnamed model'}" + (f" ({self.version})" if self.version else "")
        out = [title, ""]
        if self.task:
            out += [f"**Task:** {self.task}", ""]
        for heading, text in (("Intended use", self.intended_use), ("Out-of-scope use", self.out_of_scope_use),
                              ("Intended users", self.users)):
            if text:
                out += [f"## {heading}", "", text.strip(), ""]
        if self.data:
            out += ["## Data", ""] + [f"- **{k}:** {_fmt(v)}" for k, v in self.data.items()] + [""]
        if self.preprocessing:
            out += ["## Preprocessing", ""] + [f"- {s}" for s in self.preprocessing] + [""]
        if self.labels or self.thresholds:
            out += ["## Outputs", ""]
            out += [f"- label **{k}**: {_fmt(v)}" for k, v in self.labels.items()]
            out += [f"- threshold **{k}**: {_fmt(v)}" for k, v in self.thresholds.items()]
            out.append("")
        if self.performance:
            out += ["## Performance", ""]
            for section, value in self.performance.items():
                out += _performance_block(section, value)
        if self.calibration:
            out += ["## Calibration", ""] + [f"- **{k}:** {_fmt(v)}" for k, v in self.calibration.items()] + [""]
        for heading, items in (("Limitations", self.limitations),
                               ("Ethical considerations", self.ethical_considerations),
                               ("Caveats and recommendations", self.caveats), ("References", self.references)):
            if items:
                out += [f"## {heading}", ""] + [f"- {s}" for s in items] + [""]
        return "\n".join(out).rstrip() + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _performance_block(section: str, value: Any) -> list[str]:
    """Render one performance section: a metric dict as a bullet list, a {group: metrics} dict as a table."""
    lines = [f"### {section.replace('_', ' ')}", ""]
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        groups = value
        # nested one more level (by_subgroup: {attr: {group: metrics}}): one table per attribute
        if all(isinstance(m, dict) and m and all(isinstance(x, dict) for x in m.values()) for m in groups.values()):
            for attr, sub in groups.items():
                lines += _performance_block(f"{section} / {attr}", sub)
            return lines
        metrics = sorted({k for m in groups.values() for k in m})
        lines.append("| group | " + " | ".join(metrics) + " |")
        lines.append("|---|" + "---|" * len(metrics))
        for g, m in groups.items():
            lines.append(f"| {g} | " + " | ".join(_fmt(m.get(k, "")) for k in metrics) + " |")
    elif isinstance(value, dict):
        lines += [f"- **{k}:** {_fmt(v)}" for k, v in value.items()]
    else:
        lines.append(_fmt(value))
    return lines + [""]
