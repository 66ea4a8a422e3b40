"""The radiologist's worklist: finished studies by urgency, then those still in the queue, then (in their own
section) the studies the service could not read, each with a reason in plain words.

Order: referred or positive first (the model is unsure, or found something), then by calibrated probability,
highest first, then oldest first; jobs not finished yet follow, oldest first. Each row names the study as the
radiologist knows it (patient, ID, accession, date, modality, description, from the DICOM headers); the page fits
a 1366-px screen (fixed column widths, long text wraps inside its column).
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import Environment, select_autoescape

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medsight worklist</title>
<style>
body{font-family:system-ui,sans-serif;margin:1em;color:#222;max-width:1340px}
table{border-collapse:collapse;width:100%;table-layout:fixed}th,td{border-bottom:1px solid #ddd;padding:4px 6px;
text-align:left;vertical-align:top;overflow-wrap:anywhere;font-size:14px}th{background:#f4f4f4}
tr.urgent td{background:#fff4e5}.refer{color:#b00;font-weight:600}.muted{color:#666;font-size:12px}
img{width:80px;height:80px;object-fit:contain;background:#000}form.login{max-width:28em}
input{width:100%;padding:6px;margin:4px 0 12px}.err{color:#b00}h2{margin-top:1.5em}
</style></head><body>
{% if rows is none %}
<h1>medsight triage — sign in</h1>
<form class="login" method="post" action="/login">
<label for="token">Access token (from <code>medsight users add</code>)</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button></form>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
{% else %}
<h1>Worklist</h1><p>Signed in as {{ user }}. {{ rows|length }} studies to read (unit: study), most urgent first:
referred or positive, then by calibrated probability. <form method="post" action="/logout" style="display:inline">
<button type="submit">Sign out</button></form></p>
<table id="worklist"><colgroup><col style="width:3%"><col style="width:15%"><col style="width:9%">
<col style="width:8%"><col style="width:6%"><col style="width:12%"><col style="width:7%"><col style="width:11%">
<col style="width:6%"><col style="width:15%"><col style="width:8%"></colgroup>
<thead><tr><th>#</th><th>Patient</th><th>Accession</th><th>Date</th><th>Mod.</th><th>Description</th>
<th>Status</th><th>Finding</th><th>Prob.</th><th>Referral</th><th>Evidence</th></tr></thead><tbody>
{% for r in rows %}
<tr class="{{ 'urgent' if r.urgent else '' }}" data-job="{{ r.job_id }}">
<td>{{ loop.index }}</td><td>{{ r.patient_name or '—' }}<br><span class="muted">ID {{ r.patient_id or '—' }}</span></td>
<td>{{ r.accession }}</td><td>{{ r.study_date }}</td><td>{{ r.modality }}</td><td>{{ r.description }}</td>
<td>{{ r.status }}</td><td>{{ r.finding }}{% if r.size %}<br><span class="muted">{{ r.size }}</span>{% endif %}</td>
<td>{{ '%.3f'|format(r.probability) if r.probability is not none else '' }}</td>
<td>{% if r.referred %}<span class="refer">refer</span>: {{ r.referral_reason }}{% elif r.status == 'done' %}accept{% endif %}</td>
<td>{% if r.thumbnail %}<img alt="evidence for {{ r.job_id }}" src="{{ r.thumbnail }}">{% endif %}
{% if r.viewer %}<br><a class="ohif" href="{{ r.viewer }}" target="_blank" rel="noopener">open in OHIF</a>
{% endif %}</td></tr>
{% endfor %}
</tbody></table>
<h2>Not analysed ({{ problems|length }})</h2>
{% if problems %}<p>These studies need reading without the model's help.</p>
<table id="not-analysed"><colgroup><col style="width:18%"><col style="width:10%"><col style="width:9%">
<col style="width:6%"><col style="width:14%"><col style="width:43%"></colgroup>
<thead><tr><th>Patient</th><th>Accession</th><th>Date</th><th>Mod.</th><th>Description</th><th>Why</th></tr></thead><tbody>
{% for r in problems %}<tr data-job="{{ r.job_id }}"><td>{{ r.patient_name or '—' }}<br><span class="muted">ID
{{ r.patient_id or '—' }}</span></td><td>{{ r.accession }}</td><td>{{ r.study_date }}</td><td>{{ r.modality }}</td>
<td>{{ r.description }}</td><td>{{ r.reason }}</td></tr>{% endfor %}
</tbody></table>{% else %}<p>None.</p>{% endif %}
{% endif %}
</body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_template = _env.from_string(_PAGE)
PROBLEM_STATUSES = ("failed", "unsupported")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.@+-]+){2,}/?")  # server paths never reach the page


def plain_reason(status: str, error: str | None) -> str:
    """Why a study was not analysed, in words a radiologist can act on; no server paths or exception names."""
    text = _PATH.sub("(a file on the server)", error or "")
    if status == "unsupported":
        head = text.split(" It holds:")[0].rstrip(".")
        held = text.split(" It holds: ", 1)[1].split(". Model rules:")[0] if " It holds: " in text else ""
        rule = text.split("Model rules: ", 1)[1].split(";")[0].rsplit(": ", 1)[-1] if "Model rules: " in text else ""
        return (f"{head[:1].upper()}{head[1:]}." + (f" The study holds: {held}." if held else "")
                + (f" Why not: {rule}." if rule else ""))
    text = re.sub(r"^[A-Za-z_.]*(Error|Exception|Unsupported)\b:\s*", "", text)
    if "attempts" in text and text.startswith("gave up"):
        return "The analysis stopped three times (the worker ended each time); an administrator has the details."
    return f"The model could not analyse this study: {text[:300]}" if text else "The analysis failed."


def _study_fields(j: Any) -> dict[str, str]:
    s = getattr(j, "study", None) or {}
    date = str(s.get("study_date") or "")
    return {"patient_name": s.get("patient_name", ""), "patient_id": s.get("patient_id", ""),
            "accession": s.get("accession", ""), "modality": s.get("modalities", ""),
            "description": s.get("description", ""),
            "study_date": f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date}


def _viewer_link(j: Any, s: dict[str, Any]) -> str | None:
    """OHIF's link for a study whose results are in the PACS (the viewer reads the PACS, not medsight's files)."""
    from medsight.serve.viewer import viewer_link

    in_pacs = j.status == "done" and s.get("pushed_to")
    return viewer_link(j.study_uid, s.get("seg_series_uid")) if in_pacs else None


def order_rows(jobs: list[Any], viewer: bool = False) -> list[dict[str, Any]]:
    """Worklist rows (dicts) from jobs, in priority order: the studies to read, then those not analysed; with
    ``viewer``, each study whose results reached the PACS links to it in OHIF."""
    rows = []
    ids = {j.id for j in jobs}
    for j in jobs:
        s = j.summary or {}
        if s.get("same_result_as") in ids:  # the same study pulled again: its result is already listed
            continue
        problem = j.status in PROBLEM_STATUSES
        rows.append({"job_id": j.id, "study_uid": j.study_uid, "status": j.status, "model": j.model,
                     "submitted_at": j.submitted_at, **_study_fields(j),
                     "finding": s.get("finding", ""), "size": s.get("size", ""), "probability": s.get("probability"),
                     "referred": bool(s.get("referred")), "referral_reason": s.get("referral_reason", ""),
                     "positive": bool(s.get("positive")), "urgent": bool(s.get("referred") or s.get("positive")),
                     "not_analysed": problem, "reason": plain_reason(j.status, j.error) if problem else "",
                     "thumbnail": (f"/api/v1/jobs/{j.id}/files/thumbnail.png"
                                   if "thumbnail.png" in s.get("files", []) else None),
                     "viewer": _viewer_link(j, s) if viewer else None})

    def key(r: dict[str, Any]) -> tuple:
        done = r["status"] == "done"
        return (r["not_analysed"], not done, not r["urgent"], -(r["probability"] or 0.0), r["submitted_at"])

    return sorted(rows, key=key)


def render_worklist(rows: list[dict[str, Any]] | None, user: str | None, error: str | None = None) -> str:
    """The worklist page, or the sign-in form when ``rows`` is None."""
    if rows is None:
        return _template.render(rows=None, user=user, error=error)
    return _template.render(rows=[r for r in rows if not r["not_analysed"]], user=user, error=error,
                            problems=[r for r in rows if r["not_analysed"]])
