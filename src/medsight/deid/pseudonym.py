"""Keyed, one-way pseudonyms: HMAC-SHA256 under a secret key.

The same input under the same key always gives the same output (so series, studies and patients stay linked
across files and runs); without the key no mapping can be reversed or even tested, because HMAC is a keyed PRF.
The key itself never leaves this object: ``repr`` hides it and only ``fingerprint`` (an HMAC of a constant,
which reveals nothing about the key) is ever written, to detect a resumed run using a different key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from pathlib import Path

from medsight.errors import ConfigError, InputNotFoundError

MIN_KEY_BYTES = 16
# A date shift moves every date of one patient back by 1..MAX_SHIFT_DAYS days (intervals kept).
MAX_SHIFT_DAYS = 3650


class Pseudonymizer:
    """Deterministic keyed pseudonyms for UIDs, patient IDs and per-patient date offsets."""

    __slots__ = ("_key", "_uid_cache")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"de-identification key is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                              "(e.g. `head -c 32 /dev/urandom > deid.key`)")
        self._key = bytes(key)
        self._uid_cache: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> Pseudonymizer:
        """Read a key file (raw bytes; surrounding whitespace of a text key is ignored)."""
        p = Path(path)
        if not p.is_file():
            raise InputNotFoundError("key file not found; create one with `head -c 32 /dev/urandom > FILE`", p)
        data = p.read_bytes()
        return cls(data.strip() if data.strip() else data)

    @classmethod
    def random(cls) -> Pseudonymizer:
        """A fresh random key: pseudonyms link files within this run only."""
        return cls(secrets.token_bytes(32))

    def __repr__(self) -> str:
        return f"Pseudonymizer(fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self):  # pickled only to hand the key to worker processes, never to disk
        return (Pseudonymizer, (self._key,))

    def _digest(self, domain: str, value: str) -> bytes:
        return hmac.new(self._key, f"{domain}\x00{value}".encode(), hashlib.sha256).digest()

    @property
    def fingerprint(self) -> str:
        """A 16-hex-digit tag identifying the key without revealing it."""
        return self._digest("fingerprint", "medsight-deid").hex()[:16]

    def text_hash(self, text: str) -> str:
        """A keyed 16-hex-digit hash of text read in the pixels: the report can say "the same word again"
        without naming it, and without the key nobody can test a guessed name against it."""
        return self._digest("ocr-text", text).hex()[:16]

    def uid(self, uid: str) -> str:
        """A new UID under the 2.25 (UUID-derived) root: "2.25." + a 128-bit integer from the HMAC (<= 44 chars)."""
        out = self._uid_cache.get(uid)
        if out is None:
            value = int.from_bytes(self._digest("uid", uid.strip().rstrip("\x00"))[:16], "big")
            out = f"2.25.{value}"
            self._uid_cache[uid] = out
        return out

    def patient_id(self, patient_id: str) -> str:
        """A 20-character pseudonymous patient ID ("MS" + 18 uppercase hex digits)."""
        return "MS" + self._digest("patient", patient_id.strip()).hex()[:18].upper()

    def date_offset_days(self, patient_id: str) -> int:
        """Per-patient shift in days, in [-MAX_SHIFT_DAYS, -1]: every date of one patient moves by the same amount."""
        n = int.from_bytes(self._digest("date", patient_id.strip())[:8], "big")
        return -(1 + n % MAX_SHIFT_DAYS)


def shift_date(value: str, days: int) -> str:
    """Shift a DA value (YYYYMMDD) by ``days``; '' stays ''. Raises ValueError on an unparseable date."""
    value = value.strip()
    if not value:
        return value
    d = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    return d.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """Shift a DT value (YYYYMMDD[HHMMSS[.FFFFFF]][&ZZXX]) by whole days: the time of day is kept."""
    value = value.strip()
    if len(value) < 8:
        return "" if not value else value  # a year or year-month alone carries little; keep its precision
    return shift_date(value[:8], days) + value[8:]
