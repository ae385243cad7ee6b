"""Who may do what with a session: the owner, an admin, and the one user a session may be granted to."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from core.errors import Forbidden, InvalidInput, NotFound

AccessLevel = Literal["read", "write"]
ACCESS_LEVELS: tuple[AccessLevel, ...] = ("read", "write")

_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Caller(Protocol):
    """Anything with a user id and a role (mcp_server.auth.Identity fits)."""

    @property
    def user_id(self) -> str: ...

    @property
    def role(self) -> str: ...


def _shown(text: Any) -> str:
    """An untrusted value, cut and stripped of control characters, safe to echo in a one-line error."""
    shown = "".join(ch if ch.isprintable() else "?" for ch in str(text)[:40])
    return shown + ("..." if len(str(text)) > 40 else "")


def session_id(raw: Any) -> str:
    """The canonical (lower-case) form of a session id, or InvalidInput."""
    text = str(raw).strip().lower() if isinstance(raw, str) else ""
    if not _SESSION_ID.match(text):
        raise InvalidInput(
            f"session_id '{_shown(raw)}' is not a session id (a UUID like "
            "'0b9f4c1e-2d3a-4e5f-8a6b-7c8d9e0f1a2b'); use the session_id that session_create returned"
        )
    return str(uuid.UUID(text))


def key_name(raw: Any) -> str:
    if not isinstance(raw, str) or not _KEY_NAME.match(raw):
        raise InvalidInput(
            f"key '{_shown(raw)}' is not a valid key name: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return raw


def is_session_id(raw: Any) -> bool:
    """Has `raw` the form of a session id (any case, surrounding spaces allowed)?"""
    return isinstance(raw, str) and _SESSION_ID.match(raw.strip().lower()) is not None


def _argument(check: Callable[[Any], str]) -> BeforeValidator:
    """`check` as a pydantic validator: its one-line InvalidInput becomes the validation error's message."""

    def validate(raw: Any) -> str:
        try:
            return check(raw)
        except InvalidInput as error:
            raise PydanticCustomError("invalid", error.message) from None

    return BeforeValidator(validate)


# Tool arguments, one definition each: the JSON schema says what is expected, and a wrong value gets the
# one-line message of session_id / key_name above (their validators run before pydantic's checks).
SessionId = Annotated[
    str,
    _argument(session_id),
    Field(
        description="the session_id that session_create returned (a UUID)",
        json_schema_extra={"format": "uuid"},
    ),
]
KeyName = Annotated[
    str,
    Field(
        pattern=_KEY_NAME.pattern,
        description="a name in the session: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    ),
    _argument(key_name),
]


def user_id(raw: Any) -> str:
    if not isinstance(raw, str) or not _USER_ID.match(raw):
        raise InvalidInput(f"user_id '{_shown(raw)}' is not a user id: use 1-64 letters, digits or _.@-")
    return raw


def access_level(raw: Any) -> AccessLevel:
    if raw not in ACCESS_LEVELS:
        raise InvalidInput(f"access_level '{_shown(raw)}' is not one of: read, write")
    level: AccessLevel = raw
    return level


def not_found(session: str) -> NotFound:
    """The one answer for a session that is missing, expired, closed, or not the caller's to see."""
    return NotFound(
        f"session '{session}' not found: it may have expired, been closed or never existed; "
        "session_list shows the sessions you can use"
    )


@dataclass(frozen=True)
class Grants:
    """The decrypted ownership facts of one session."""

    owner_id: str
    grant_user: str | None = None
    grant_level: AccessLevel = "read"

    def can_read(self, caller: Caller) -> bool:
        return caller.role == "admin" or caller.user_id in (self.owner_id, self.grant_user)

    def can_write(self, caller: Caller) -> bool:
        if caller.role == "viewer":
            return False  # a viewer never writes, whatever it was granted
        if caller.role == "admin" or caller.user_id == self.owner_id:
            return True
        return caller.user_id == self.grant_user and self.grant_level == "write"

    def can_manage(self, caller: Caller) -> bool:
        """Close, restore and extend: the owner or an admin."""
        return caller.role == "admin" or (caller.role != "viewer" and caller.user_id == self.owner_id)

    def require_read(self, caller: Caller, session: str) -> None:
        if not self.can_read(caller):
            raise not_found(session)

    def require_write(self, caller: Caller, session: str) -> None:
        self.require_read(caller, session)
        if not self.can_write(caller):
            raise Forbidden(
                f"session '{session}' is read-only for you ({caller.role}); ask its owner to grant write "
                "access (viewers never write)"
            )

    def require_manage(self, caller: Caller, session: str, action: str) -> None:
        self.require_read(caller, session)
        if not self.can_manage(caller):
            raise Forbidden(f"only the owner of session '{session}' or an admin can {action} it")
