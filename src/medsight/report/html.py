"""Render the results document to one self-contained HTML file (plots inline, no scripts or fonts fetched).

Every number is written by ``num(path)``, which looks the value up in the JSON and tags it with
``data-json="<path>"``: the page cannot show a number the JSON does not hold. A Content-Security-Policy that
allows only inline data stops the page from reaching the network even if a future template slips.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from medsight.files import atomic_write_text
from medsight.report import plots
from medsight.report.checklist import checklist_for
from medsight.report.results import ValidationResults, resolve

TEMPLATES = Path(__file__).parent / "templates"
DIGITS = 3


def fmt(value: Any) -> str:
    """How the page writes a number: 3 decimals for floats, integers as is, 'n/a' for null."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{DIGITS}f}"


def _forest_rows(section: dict[str, Any], metric_key: str, min_cases: int) -> list[dict[str, Any]]:
    """Per-cohort rows for the forest plot; a cohort under ``min_cases`` is drawn as 'too few cases' too."""
    rows = []
    for c in section["cohorts"]:
        few = c["n"] < min_cases
        if metric_key == "auc":
            rows.append({"label": f"{c['name']} ({c['kind']})", "n": c["n"], "metric": c["auc"], "too_few": few})
        else:  # one row per label and cohort
            for lab, m in c["dice"].items():  # n: the cases whose reference holds the label
                n = (c.get("dice_n") or {}).get(lab, c["n"])
                rows.append({"label": f"{lab}, {c['name']}", "n": n, "metric": m, "too_few": n < min_cases})
    return rows


def _figures(doc: dict[str, Any]) -> dict[str, str | None]:
    figs: dict[str, str | None] = {}
    cls = doc.get("classification")
    if cls:
        figs["roc_pr"] = plots.roc_pr(cls["cohorts"])
        figs["reliability"] = plots.reliability(cls["cohorts"])
        figs["decision"] = plots.decision_curves(cls["cohorts"])
        figs["cls_sites"] = plots.forest(_forest_rows(cls, "auc", doc["min_cases"]), "AUC", "AUC by cohort (95% CI)")
        figs["cls_subgroups"] = plots.forest(
            [{"label": f"{r['attribute']}: {r['group']}", **r} for r in cls["subgroups"]], "AUC",
            "AUC by subgroup, 95% CI (red: worst)")
    seg = doc.get("segmentation")
    if seg:
        figs["seg_sites"] = plots.forest(_forest_rows(seg, "dice", doc["min_cases"]), "Dice", "Dice by label and cohort (95% CI)")
        figs["seg_subgroups"] = plots.forest(
            [{"label": f"{r['attribute']}: {r['group']}", **r} for r in seg["subgroups"]], "mean foreground Dice",
            "Mean foreground Dice by subgroup, 95% CI (red: worst)")
        figs["dice"] = plots.dice_distribution(seg["cohorts"])
    if doc.get("federated"):
        figs["federated"] = plots.federated_rounds(doc["federated"])
    return figs


def render_html(results: ValidationResults | dict[str, Any]) -> str:
    """The report page as a string."""
    doc = results.to_dict() if isinstance(results, ValidationResults) else results

    def num(path: str) -> Markup:
        v = resolve(doc, path)
        return Markup(f'<span class="num" data-json="{escape(path)}">{escape(fmt(v))}</span>')

    def ci(path: str) -> Markup:
        c = resolve(doc, path)
        if c.get("value") is None:
            return Markup(f'<span class="na" data-json="{escape(path)}.value">n/a</span>')
        s = num(f"{path}.value")
        if c.get("lo") is not None and c.get("hi") is not None:
            s += Markup(" <small>(") + num(f"{path}.lo") + Markup("&ndash;") + num(f"{path}.hi") + Markup(")</small>")
        return s

    def txt(base: str, *keys: Any) -> Markup:
        """A text value of the JSON (model card fields), tagged like numbers so that checks can find its source:
        ``base`` is a dotted path, ``keys`` follow it as they are (group names may hold dots)."""
        v = resolve(doc, base)
        for k in keys:
            v = v[int(k)] if isinstance(v, list) else v[k]
        keys_json = escape(json.dumps([str(k) for k in keys]))
        return Markup(f'<span class="txt" data-json-text="{escape(base)}" data-json-keys="{keys_json}">'
                      f'{escape(fmt(v) if v is None else v)}</span>')

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(doc=doc, num=num, ci=ci, txt=txt, figs=_figures(doc),
                                                     checklist=checklist_for(doc))


def write_report(results: ValidationResults, html_path: str | Path, json_path: str | Path | None = None
                 ) -> tuple[Path, Path]:
    """Write report.html and (beside it unless given) report.json, both atomically."""
    html_path = Path(html_path)
    json_path = Path(json_path) if json_path else html_path.with_suffix(".json")
    results.write(json_path)
    atomic_write_text(html_path, render_html(results))
    return html_path, json_path
