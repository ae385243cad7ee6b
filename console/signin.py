"""Signing in to the console: an admin key (or OAuth token) exchanged for a signed, HttpOnly,
SameSite=Strict cookie with an expiry, and the CSRF token every form posts back.

The cookie holds the user, role, key id (a digest prefix, never the key) and the CSRF token, signed
with a key derived from SESSION_ENCRYPTION_KEY: every instance of a deployment shares it, so any
instance accepts a cookie another issued, and rotating that key signs everyone out."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from mcp_server.auth import Identity
from mcp_server.runtime import Runtime

COOKIE = "amcp_console"
SIGNIN_COOKIE = "amcp_console_signin"  # the sign-in form's own CSRF token, before there is a session
PATH = "/console"
LIFETIME_SECONDS = 8 * 3600
SIGNIN_SECONDS = 600
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class ConsoleSession:
    user_id: str
    role: str
    key_id: str
    csrf: str
    expires: int  # epoch seconds
    via: str  # "key" (checked against API_KEYS on every request) or "oauth"

    @property
    def identity(self) -> Identity:
        return Identity(self.user_id, self.role, self.key_id)  # type: ignore[arg-type]


class Cookies:
    def __init__(self, secret: bytes, lifetime: int = LIFETIME_SECONDS) -> None:
        self.lifetime = lifetime
        self._session = URLSafeTimedSerializer(secret, salt="analytics-mcp console session")
        self._signin = URLSafeTimedSerializer(secret, salt="analytics-mcp console sign-in")

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> Cookies:
        # Derived, not the encryption key itself: a cookie signature says nothing about that key.
        key = runtime.encryption_keys[0].encode()
        return cls(hmac.new(key, b"analytics-mcp console cookie", hashlib.sha256).digest())

    def issue(self, identity: Identity, via: str) -> tuple[str, ConsoleSession]:
        session = ConsoleSession(
            identity.user_id,
            identity.role,
            identity.key_id,
            secrets.token_urlsafe(24),
            int(time.time()) + self.lifetime,
            via,
        )
        value = self._session.dumps(
            [session.user_id, session.role, session.key_id, session.csrf, session.expires, session.via]
        )
        return value, session

    def session_of(self, request: Request) -> ConsoleSession | None:
        """The signed-in admin of this request; None without a valid, unexpired admin cookie."""
        value = request.cookies.get(COOKIE)
        if not value or len(value) > 1024:
            return None
        try:
            fields: Any = self._session.loads(value, max_age=self.lifetime)
            session = ConsoleSession(*fields)
        except (BadSignature, TypeError, ValueError):
            return None
        if session.expires < time.time() or session.role != "admin":
            return None
        return session

    def signin_token(self) -> tuple[str, str]:
        """A fresh sign-in CSRF token and its signed cookie value."""
        token = secrets.token_urlsafe(24)
        return token, self._signin.dumps(token)

    def signin_token_of(self, request: Request) -> str | None:
        value = request.cookies.get(SIGNIN_COOKIE)
        if not value or len(value) > 512:
            return None
        try:
            token: Any = self._signin.loads(value, max_age=SIGNIN_SECONDS)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None


def same_token(expected: str | None, given: Any) -> bool:
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(expected or "", given)


def is_https(request: Request) -> bool:
    # Behind a TLS-terminating proxy the scheme arrives as X-Forwarded-Proto (uvicorn --proxy-headers).
    return request.url.scheme == "https"


def set_cookie(response: Response, name: str, value: str, max_age: int, request: Request) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_cookie(response: Response, name: str, request: Request) -> None:
    response.delete_cookie(name, path=PATH, httponly=True, samesite="strict", secure=is_https(request))
