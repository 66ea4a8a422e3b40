"""Tamper-evident audit log: who ran what, on which input hash, with which model (see ``log.py``)."""

from __future__ import annotations

from medsight.audit.log import AuditLog, AuditRecord, VerifyResult, default_audit_log

__all__ = ["AuditLog", "AuditRecord", "VerifyResult", "default_audit_log"]
