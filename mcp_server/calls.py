"""What the edge knows about the MCP call in progress, shared by its middleware through a contextvar."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

from core.errors import Forbidden
from mcp_server.auth import Identity


@dataclass
class CallInfo:
    request_id: str
    kind: str  # tool | resource | prompt | list
    name: str  # the declared name (a tool's, a resource's URI or URI template); for a list, its method
    identity: Identity | None
    arguments: dict[str, Any] = field(default_factory=dict)
    declared: bool = True  # False: a name nobody declared (agent input: never recorded as such)
    started: float = field(default_factory=time.perf_counter)
    outcome: str = "ok"
    error: str | None = None

    @property
    def duration_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


_current: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("mcp_call", default=None)


def current_call() -> CallInfo | None:
    return _current.get()


def current_identity() -> Identity:
    """The caller of the tool, resource or prompt being served (bound by the Identify middleware)."""
    call = _current.get()
    if call is None or call.identity is None:
        raise Forbidden("no authenticated caller; send X-API-Key or Authorization: Bearer")
    return call.identity


def bind_call(call: CallInfo) -> contextvars.Token[CallInfo | None]:
    return _current.set(call)


def reset_call(token: contextvars.Token[CallInfo | None]) -> None:
    _current.reset(token)
