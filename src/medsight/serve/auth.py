"""Users, roles and tokens: bearer tokens for the API, a login page and an HttpOnly session cookie for the worklist.

Only SHA-256 digests of tokens and session ids are stored (tokens are 256-bit random, so a plain digest is enough;
no password is ever chosen by a person). A token is printed once, when the user is added.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from medsight.serve.store import ROLES, Store

TOKEN_PREFIX = "msk_"
SESSION_COOKIE = "medsight_session"
SESSION_TTL_S = 8 * 3600

# which roles may do what; an admin may do everything
PERMISSIONS: dict[str, frozenset[str]] = {
    "submit": frozenset({"submitter", "admin"}),
    "read_job": frozenset({"submitter", "reader", "admin"}),
    "worklist": frozenset({"reader", "admin"}),
}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, action: str) -> bool:
        return self.role in PERMISSIONS[action]


def add_user(store: Store, name: str, role: str) -> str:
    """Create a user and return its token (shown once; only its digest is kept)."""
    if role not in ROLES:
        from medsight.serve.store import StoreError

        raise StoreError(f"unknown role '{role}'; use one of {', '.join(ROLES)}")
    token = new_token()
    store.add_user(name, role, digest(token))
    return token


def rotate_user(store: Store, name: str) -> str:
    """A new token for ``name`` (shown once); the old one and the user's sessions stop working at once."""
    token = new_token()
    store.rotate_user(name, digest(token))
    return token


def user_for_token(store: Store, token: str | None) -> User | None:
    """The active (not revoked) user holding ``token``, or None."""
    if not token:
        return None
    row = store.user_by_token(digest(token))
    if row is None or row["revoked"]:
        return None
    return User(row["name"], row["role"])


def user_for_session(store: Store, session_id: str | None) -> User | None:
    if not session_id:
        return None
    name = store.session_user(digest(session_id))
    row = store.user(name) if name else None
    if row is None or row["revoked"]:
        return None
    return User(row["name"], row["role"])


def open_session(store: Store, user: User) -> str:
    sid = secrets.token_urlsafe(32)
    store.add_session(digest(sid), user.name, SESSION_TTL_S)
    return sid
