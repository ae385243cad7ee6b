"""OAuth 2.1 as a second way in: bearer JWTs from the operator's issuer, and the RFC 9728 metadata
that tells an MCP client where to get one. API keys are tried first; a JWT only when OAuth is on."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import Any

from fastmcp.server.auth.providers.jwt import JWTVerifier

from mcp_server.auth import Identity, KeyRegistry, presented_key
from mcp_server.config import _USER_ID, ROLES, OAuthSettings

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
# RFC 9728 section 3.1: the well-known prefix, then the resource's path.
METADATA_PATH = "/.well-known/oauth-protected-resource" + MCP_PATH
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
MAX_TOKEN_CHARS = 16_384


class OAuthVerifier:
    """Turns a bearer JWT into an Identity: signature, issuer, audience and expiry checked by FastMCP's
    JWTVerifier; the user from `sub`, the role from the configured claim."""

    def __init__(self, settings: OAuthSettings) -> None:
        self.settings = settings
        self._verifier = JWTVerifier(
            public_key=settings.public_key,
            jwks_uri=settings.jwks_url,
            issuer=settings.issuer,
            audience=settings.audience,
            algorithm=settings.algorithm,
        )

    async def identify(self, token: str) -> Identity | None:
        access = await self._verifier.verify_token(token)
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


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>`; header names are lower-case."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def looks_like_jwt(token: str) -> bool:
    return len(token) <= MAX_TOKEN_CHARS and bool(_JWT.match(token))


async def resolve_identity(
    keys: KeyRegistry, oauth: OAuthVerifier | None, headers: Mapping[str, str]
) -> Identity | None:
    """Who sent these HTTP headers: an API key first, then a bearer JWT when OAuth is configured."""
    identity = keys.resolve(presented_key(headers))
    if identity is None and oauth is not None:
        token = bearer_token(headers)
        if token and looks_like_jwt(token):
            identity = await oauth.identify(token)
    return identity


def metadata_url(base_url: str) -> str:
    return base_url.rstrip("/") + METADATA_PATH


def www_authenticate(oauth: OAuthVerifier | None, base_url: str) -> str:
    """The 401's challenge: the realm for API keys, plus where OAuth clients find the metadata."""
    if oauth is None:
        return 'Bearer realm="analytics-mcp"'
    return f'Bearer realm="analytics-mcp", resource_metadata="{metadata_url(base_url)}"'


def protected_resource_metadata(oauth: OAuthVerifier, base_url: str) -> dict[str, Any]:
    """RFC 9728 protected-resource metadata for the MCP endpoint."""
    return {
        "resource": base_url.rstrip("/") + MCP_PATH,
        "authorization_servers": [oauth.settings.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "analytics-mcp",
    }
