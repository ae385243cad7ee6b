"""Who is calling: API keys by SHA-256 digest, the identity of the current call, and role sets."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.errors import Forbidden
from mcp_server.config import ApiKeyEntry, Role

ADMIN: frozenset[Role] = frozenset({"admin"})
ANALYST: frozenset[Role] = frozenset({"admin", "analyst"})
EVERYONE: frozenset[Role] = frozenset({"admin", "analyst", "viewer"})


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: Role
    key_id: str  # first hex characters of the key's digest: safe to log, useless to an attacker

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class KeyRegistry:
    """Maps a presented key to an identity by comparing SHA-256 digests."""

    def __init__(self, entries: Iterable[ApiKeyEntry]) -> None:
        self._by_digest = {entry.digest: entry for entry in entries}

    def __len__(self) -> int:
        return len(self._by_digest)

    def resolve(self, key: str | None) -> Identity | None:
        if not key or len(key) > 512:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return Identity(entry.user_id, entry.role, entry.key_id)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from `X-API-Key` or `Authorization: Bearer`; header names are lower-case."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "analytics_mcp_identity", default=None
)


def current_identity() -> Identity:
    """The caller of the tool, resource or prompt being served (bound by the Identify middleware)."""
    identity = _current.get()
    if identity is None:
        raise Forbidden("no authenticated caller; send X-API-Key or Authorization: Bearer")
    return identity


def bind_identity(identity: Identity | None) -> contextvars.Token[Identity | None]:
    return _current.set(identity)


def reset_identity(token: contextvars.Token[Identity | None]) -> None:
    _current.reset(token)


def require_role(identity: Identity, allowed: frozenset[Role], what: str) -> None:
    if identity.role not in allowed:
        needed = " or ".join(sorted(allowed))
        raise Forbidden(f"{what} needs role {needed}; your key has role {identity.role}")
