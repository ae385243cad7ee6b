"""The one error hierarchy of analytics-mcp: every message is one line saying what is wrong and what to do.

The MCP edge turns these into tool errors verbatim; anything else is answered with a generic
message and a request id. The other packages (sessions, warehouse, mcp_server) raise these too.
"""

from __future__ import annotations


class AnalyticsError(Exception):
    """Base of every error whose message is safe to show an agent."""

    def __init__(self, message: str) -> None:
        # One line, always: agents quote these, logs index them.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidInput(AnalyticsError):
    """An argument is malformed, out of range or names something that does not exist."""


class NotFound(AnalyticsError):
    """The thing asked for does not exist, or the caller may not know that it does."""


class Forbidden(AnalyticsError):
    """The caller's role does not allow this."""


class QueryRefused(AnalyticsError):
    """SQL that the guard will not run."""


class Timeout(AnalyticsError):
    """The work took longer than the time it was given."""


class Unavailable(AnalyticsError):
    """A dependency (PostgreSQL, Redis) does not answer; retry when it is back."""


class RateLimited(AnalyticsError):
    """Too many calls in the current window."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
