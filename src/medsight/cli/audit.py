"""``medsight audit verify|list``: check the hash chain of the audit log and read its records."""

from __future__ import annotations

import json

import click

_URL = click.option("--url", default=None, help="SQLAlchemy URL or SQLite file of the log "
                                                "(default: $MEDSIGHT_AUDIT_URL or $MEDSIGHT_HOME/audit.db).")


@click.group()
def audit() -> None:
    """Inspect and verify the tamper-evident audit log."""


@audit.command()
@_URL
def verify(url: str | None) -> None:
    """Walk the hash chain; exit 2 naming the first edited, deleted or reordered record."""
    from medsight.audit.log import AuditLog
    from medsight.errors import IntegrityError

    log = AuditLog(url)
    result = log.verify()
    if not result.ok:
        raise IntegrityError(f"audit log {log._safe_url()} failed verification at record {result.bad_seq}: "
                             f"{result.reason}")
    seq, head = log.head()
    click.echo(f"ok  {result.n_records} records, chain intact, head {seq} {head}")


@audit.command("list")
@_URL
@click.option("--since", type=int, default=0, show_default=True, help="Only records after this sequence number.")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="At most this many records.")
@click.option("--event", "event_name", default=None, help="Only this event type (e.g. deid.run, predict).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_cmd(url: str | None, since: int, limit: int, event_name: str | None, as_json: bool) -> None:
    """Print records in order: sequence, time, event, actor, details."""
    from medsight.audit.log import AuditLog

    for r in AuditLog(url).records(since=since, limit=limit, event_name=event_name):
        if as_json:
            click.echo(json.dumps({"seq": r.seq, "ts": r.ts, "event": r.event, "actor": r.actor,
                                   "details": r.details, "hash": r.hash}, sort_keys=True))
        else:
            click.echo(f"{r.seq:6d}  {r.ts}  {r.event:20s} {r.actor:16s} "
                       f"{json.dumps(r.details, sort_keys=True, default=str)}")
