"""Who is calling: one FastMCP token verifier for API keys (by SHA-256 digest) and, when OAUTH_* is
configured, bearer JWTs from the operator's issuer; the identity of the current call; role sets, and the
role check FastMCP runs for each tool, resource and prompt (its per-component `auth=`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastmcp.server.auth import AccessToken, AuthContext, TokenVerifier
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.utilities.components import FastMCPComponent
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken as SDKAccessToken

from core.errors import Forbidden
from mcp_server.config import _USER_ID, ROLES, ApiKeyEntry, OAuthSettings, Role

log = logging.getLogger(__name__)

ADMIN: frozenset[Role] = frozenset({"admin"})
ANALYST: frozenset[Role] = frozenset({"admin", "analyst"})
EVERYONE: frozenset[Role] = frozenset({"admin", "analyst", "viewer"})

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
MAX_TOKEN_CHARS = 16_384


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

    def resolve(self, key: str | None) -> Identity | None:
        if not key or len(key) > 512:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return Identity(entry.user_id, entry.role, entry.key_id)


class OAuthVerifier(JWTVerifier):
    """FastMCP's JWT checks (signature, issuer, audience, expiry) plus ours: the token must expire,
    the user is `sub` (a user id) and the role the configured claim (admin, analyst or viewer)."""

    def __init__(self, settings: OAuthSettings) -> None:
        super().__init__(
            public_key=settings.public_key,
            jwks_uri=settings.jwks_url,
            issuer=settings.issuer,
            audience=settings.audience,
            algorithm=settings.algorithm,
        )
        self.settings = settings

    async def identify(self, token: str) -> Identity | None:
        if len(token) > MAX_TOKEN_CHARS or not _JWT.match(token):
            return None
        access = await self.verify_token(token)
        if access is None:
            return None  # bad signature, expired, wrong issuer or audience: the verifier logged why
        claims = access.claims
        if claims.get("exp") is None:
            log.info("bearer JWT refused: it has no exp claim (tokens must expire)")
            return None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not _USER_ID.match(subject):
            log.info("bearer JWT refused: sub is not a user id (1-64 letters, digits or _.@-)")
            return None
        role = claims.get(self.settings.role_claim)
        if not isinstance(role, str) or role not in ROLES:
            log.info(
                "bearer JWT refused for %s: claim %r is not admin, analyst or viewer",
                subject,
                self.settings.role_claim,
            )
            return None
        # Like an API key's id: short, stable per user of this issuer, and no secret.
        key_id = hashlib.sha256(f"{self.settings.issuer}\n{subject}".encode()).hexdigest()[:12]
        return Identity(subject, role, key_id)


class CallerVerifier(TokenVerifier):
    """FastMCP's way in over HTTP: a bearer token is an API key first, then (with OAuth) a JWT."""

    def __init__(self, keys: KeyRegistry, oauth: OAuthVerifier | None) -> None:
        super().__init__()
        self.keys = keys
        self.oauth = oauth

    async def verify_token(self, token: str) -> AccessToken | None:
        token = token.strip()
        identity = self.keys.resolve(token)
        if identity is None and self.oauth is not None:
            identity = await self.oauth.identify(token)
        return None if identity is None else access_token(identity)


def access_token(identity: Identity) -> AccessToken:
    """The access token FastMCP keeps for a caller; its role is what each component's RoleCheck reads."""
    # The MCP SDK binds each stateful session to the client_id that opened it and answers 404
    # "Session not found" to any other. The token field holds the key id: no secret is kept.
    return AccessToken(
        token=f"key:{identity.key_id}",
        client_id=identity.key_id,
        scopes=[identity.role],
        claims={"user_id": identity.user_id, "role": identity.role},
    )


@dataclass(frozen=True)
class RoleCheck:
    """A component's role declaration, as FastMCP's per-component `auth=`: FastMCP lists and serves the
    component only to a caller whose token carries one of these roles."""

    roles: frozenset[Role]

    def __call__(self, context: AuthContext) -> bool:
        return context.token is not None and context.token.claims.get("role") in self.roles


def roles_of(component: FastMCPComponent | None) -> frozenset[Role]:
    """The roles a component was declared with; none (nobody may use it) when it has no RoleCheck."""
    check = getattr(component, "auth", None)
    return check.roles if isinstance(check, RoleCheck) else frozenset()


def is_declared(context: AuthContext) -> bool:
    """FastMCP's server-wide check (AuthMiddleware): a component registered without roles is nobody's."""
    return bool(roles_of(context.component))


def identity_of(access: SDKAccessToken) -> Identity:
    """The Identity a CallerVerifier put into an access token."""
    claims = access.claims or {}
    return Identity(claims["user_id"], claims["role"], access.client_id)


def http_identity(scope: MutableMapping[str, Any]) -> Identity | None:
    """The caller FastMCP's authentication middleware found for this HTTP request, if any."""
    user = scope.get("user")
    return identity_of(user.access_token) if isinstance(user, AuthenticatedUser) else None


def role_refusal(identity: Identity, allowed: frozenset[Role], what: str) -> Forbidden:
    needed = " or ".join(sorted(allowed))
    return Forbidden(f"{what} needs role {needed}; your key has role {identity.role}")


def require_role(identity: Identity, allowed: frozenset[Role], what: str) -> None:
    if identity.role not in allowed:
        raise role_refusal(identity, allowed, what)
