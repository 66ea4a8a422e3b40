"""The radiologist's worklist: finished studies by urgency, then those still in the queue.

Order: referred or positive first (the model is unsure, or found something), then by calibrated probability,
highest first, then oldest first; jobs not finished yet follow, oldest first.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, select_autoescape

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medsight worklist</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:6px 8px;text-align:left;
vertical-align:middle}th{background:#f4f4f4}tr.urgent td{background:#fff4e5}.refer{color:#b00;font-weight:600}
img{width:96px;height:96px;object-fit:contain;background:#000}
td.uid{max-width:12em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}td.why{max-width:22em}form.login{max-width:28em}
input{width:100%;padding:6px;margin:4px 0 12px}.err{color:#b00}
</style></head><body>
{% if rows is none %}
<h1>medsight triage — sign in</h1>
<form class="login" method="post" action="/login">
<label for="token">Access token (from <code>medsight users add</code>)</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button></form>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
{% else %}
<h1>Worklist</h1><p>Signed in as {{ user }}. {{ rows|length }} studies (unit: study); ordered by referral / positive
finding, then calibrated probability. <form method="post" action="/logout" style="display:inline">
<button type="submit">Sign out</button></form></p>
<table id="worklist"><thead><tr><th>#</th><th>Study</th><th>Status</th><th>Finding</th><th>Size</th>
<th>Probability</th><th>Referral</th><th>Evidence</th></tr></thead><tbody>
{% for r in rows %}
<tr class="{{ 'urgent' if r.urgent else '' }}" data-job="{{ r.job_id }}">
<td>{{ loop.index }}</td><td class="uid" title="{{ r.study_uid }}">{{ r.study_uid }}</td><td>{{ r.status }}</td><td>{{ r.finding }}</td>
<td>{{ r.size }}</td><td>{{ '%.3f'|format(r.probability) if r.probability is not none else '' }}</td>
<td class="why">{% if r.referred %}<span class="refer">refer</span>: {{ r.referral_reason }}{% elif r.status == 'done' %}accept{% endif %}</td>
<td>{% if r.thumbnail %}<img alt="evidence for {{ r.job_id }}" src="{{ r.thumbnail }}">{% endif %}</td></tr>
{% endfor %}
</tbody></table>
{% endif %}
</body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_template = _env.from_string(_PAGE)


def order_rows(jobs: list[Any]) -> list[dict[str, Any]]:
    """Worklist rows (dicts) from jobs, in priority order."""
    rows = []
    for j in jobs:
        s = j.summary or {}
        rows.append({"job_id": j.id, "study_uid": j.study_uid, "status": j.status, "model": j.model,
                     "submitted_at": j.submitted_at, "finding": s.get("finding", j.error or ""),
                     "size": s.get("size", ""), "probability": s.get("probability"),
                     "referred": bool(s.get("referred")), "referral_reason": s.get("referral_reason", ""),
                     "positive": bool(s.get("positive")),
                     "urgent": bool(s.get("referred") or s.get("positive")),
                     "thumbnail": (f"/api/v1/jobs/{j.id}/files/thumbnail.png"
                                   if "thumbnail.png" in s.get("files", []) else None)})

    def key(r: dict[str, Any]) -> tuple:
        done = r["status"] == "done"
        return (not done, not r["urgent"], -(r["probability"] or 0.0), r["submitted_at"])

    return sorted(rows, key=key)


def render_worklist(rows: list[dict[str, Any]] | None, user: str | None, error: str | None = None) -> str:
    """The worklist page, or the sign-in form when ``rows`` is None."""
    return _template.render(rows=rows, user=user, error=error)
