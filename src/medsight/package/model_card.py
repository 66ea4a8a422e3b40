"""Model card: what a model is for, what it was trained on, how well it does where, and where not to use it.

A plain dataclass that travels as JSON (``model_card.json`` beside the weights in the registry) and renders to
Markdown for reports. Fields follow Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019), trimmed to
what a clinical imaging model needs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
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
        if self.extra.get("below_target"):
            out += [f"> **BELOW TARGET** - this model missed its own validation target ({self.extra['below_target']}); "
                    "it is not a serving candidate.", ""]
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
        if self.extra:
            out += ["## Package and energy", ""] + [f"- **{k}:** {_fmt(v)}" for k, v in self.extra.items()] + [""]
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


# ---------------------------------------------------------------- generated cards
CARD_MD = "model_card.md"
AUTHORED_JSON = "model_card.json"  # facts only the authors know (intended use...); the measured rest is generated


def _ci_text(c: dict[str, Any] | None) -> str:
    if not c or c.get("value") is None:
        return "n/a"
    s = f"{c['value']:.3f}"
    return s + (f" ({c['lo']:.3f}-{c['hi']:.3f})" if c.get("lo") is not None and c.get("hi") is not None else "")


def _performance(section: dict[str, Any], task: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(by cohort, by subgroup, calibration) as short strings, from a results document's section."""
    unit = section.get("unit", "case")
    cohorts: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    for c in section.get("cohorts", []):
        if task == "classification":
            cohorts[c["name"]] = {f"n ({unit}s)": c["n"], "AUC (95% CI)": _ci_text(c.get("auc")),
                                  "sensitivity": _ci_text(c.get("sensitivity")),
                                  "specificity": _ci_text(c.get("specificity")),
                                  "referred": _ci_text(c.get("referral_rate"))}
            before = (c.get("ece_before") or {}).get("value")
            calibration[c["name"]] = (f"ECE {_ci_text(c.get('ece_before'))} before, {_ci_text(c.get('ece_after'))} "
                                      f"after calibration ({unit}s)" if before is not None else
                                      f"ECE {_ci_text(c.get('ece_after'))} ({unit}s; no uncalibrated probabilities "
                                      "were given, so no 'before')")
        else:
            row: dict[str, Any] = {f"n ({unit}s)": c["n"]}
            for lab, d in c.get("dice", {}).items():
                row[f"Dice {lab}"] = f"{_ci_text(d)}, n={(c.get('dice_n') or {}).get(lab, c['n'])}"
            for lab, e in (c.get("empty_reference") or {}).items():
                row[f"{lab}: false-positive rate on empty references"] = f"{_ci_text(e.get('fp_rate'))}, n={e['n']}"
            cohorts[c["name"]] = row
    subgroups: dict[str, Any] = {}
    metric = "AUC" if task == "classification" else "mean Dice"
    for r in section.get("subgroups", []):
        text = "too few cases" if r.get("too_few") else _ci_text(r.get("metric"))
        subgroups.setdefault(r["attribute"], {})[r["group"]] = {"n": r["n"], metric: text}
    return cohorts, subgroups, calibration


def build_model_card(doc: dict[str, Any], task: str, *, name: str, authored: dict[str, Any] | None = None,
                     training_data: dict[str, Any] | None = None, package: dict[str, Any] | None = None,
                     energy: dict[str, Any] | None = None, worst_cases: list[dict[str, Any]] | None = None
                     ) -> ModelCard:
    """A card for one model from a validation results document (``doc``, a dict) and what its folder holds.

    ``authored`` (the folder's ``model_card.json``) supplies intended and out-of-scope use and any other written
    field; everything measured (metrics with CIs per cohort and subgroup, calibration, operating point, known
    failure modes from the worst cases, energy, package id) comes from ``doc`` and the folder, so a card cannot
    claim more than the report shows.
    """
    card = ModelCard.from_dict(dict(authored or {}))
    section = doc.get(task) or {}
    card.name = card.name or name
    card.task = card.task or task
    pkg = package or {}
    card.version = card.version or str(pkg.get("version", "unregistered"))
    card.intended_use = card.intended_use or "Not stated by the model's authors (add model_card.json to the model)."
    card.out_of_scope_use = card.out_of_scope_use or (
        "Any use outside the intended use above; any population, site or scanner not covered by the cohorts below; "
        "clinical decisions without a qualified reader.")
    data = doc.get("data") or {}
    card.data = {**card.data, **(training_data or {}),
                 "evaluation manifest sha256": data.get("manifest_sha256"),
                 "evaluated sites": data.get("sites"), "external sites": data.get("external_sites")}
    cohorts, subgroups, calibration = _performance(section, task)
    card.performance = {"unit": section.get("unit", "case"), "by_cohort": cohorts, "by_subgroup": subgroups}
    if section.get("rule"):
        card.performance["rule"] = section["rule"]
    card.calibration = calibration
    op = section.get("operating_point")
    if op:
        card.thresholds = {str(op.get("label", "threshold")): float(op["threshold"])}
        card.extra["operating_point"] = {k: op.get(k) for k in ("unit", "target", "source", "validation")}
    failures = [f"{w['case_id']} ({w['cohort']}): {w['metric']} = {w['value']:.3f}" for w in (worst_cases or [])]
    card.limitations = list(card.limitations) + [f"worst case {f}" for f in failures]
    few = sorted({f"{r['attribute']}={r['group']} (n={r['n']})" for r in section.get("subgroups", [])
                  if r.get("too_few")})
    if few:
        card.limitations.append("subgroups too small to estimate: " + ", ".join(few))
    card.extra["package_id"] = pkg.get("id")
    if pkg.get("below_target"):
        card.extra["below_target"] = pkg["below_target"]
    keep = ("kwh", "co2_kg", "seconds", "method", "measured")  # the record's headline; per-run detail stays in it
    card.extra["energy"] = ({k: energy[k] for k in keep if k in energy} if energy
                            else "not measured (no energy.json with the model)")
    return card


def write_model_file(model_dir: str | Path, name: str, text: str) -> Path:
    """Store a generated file in a model folder. In a model package (a ``manifest.json`` beside it) the file
    becomes part of a new package version in its own folder (``derive_package``: hashed, listed, parent
    recorded; the registered version is left as it was), since a file
    dropped beside a package's listed files would make it fail verification; a plain folder gets an atomic write."""
    from medsight.files import atomic_write_text

    folder = Path(model_dir)
    if (folder / "manifest.json").is_file():
        try:
            from medsight.package.package import derive_package, load_package
        except ImportError:  # a folder from a newer medsight: write beside it as a plain file
            pass
        else:
            return derive_package(load_package(folder), files={name: text.encode()}).path / name
    atomic_write_text(folder / name, text)
    return folder / name


def write_model_card(card: ModelCard, model_dir: str | Path) -> Path:
    """Write the card as ``model_card.md`` in the model folder (a new package version for a package)."""
    return write_model_file(model_dir, CARD_MD, card.to_markdown())
