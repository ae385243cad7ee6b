"""The registration API: a FastMCP server plus the role each tool, resource and prompt is declared with.

Tools import this module to declare themselves; it imports none of them (mcp_server/server.py builds).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import redis.exceptions
from fastmcp import FastMCP
from fastmcp.exceptions import FastMCPError, PromptError, ResourceError, ToolError

from core.errors import AnalyticsError
from mcp_server import logs, package_version
from mcp_server.auth import Identity
from mcp_server.config import Role
from mcp_server.runtime import Runtime
from warehouse.db import CONNECTION_ERRORS

log = logging.getLogger(__name__)

# Redis away, or in a Sentinel failover / cluster re-shard (a demoted master, slots not served yet).
REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)
QUIET = logging.DEBUG  # the level FastMCP logs an error at that a component has answered already
POSTGRES_DOWN = CONNECTION_ERRORS

INSTRUCTIONS = """\
analytics-mcp: statistical analysis of a telecom operator's PostgreSQL data (tables customers,
network_events, revenue). Start with summary_snapshot, read schema://database/main and
docs://data_dictionary, open a session (session_create) to keep datasets, analyses and charts,
query with query_database (read-only SELECT, %(name)s parameters), analyse with analyze_data,
and chart with create_visualization. Other data sources (list_sources, schema://{source}) are
queried with query_database(source=...) in their own SQL dialect."""


class App:
    """A FastMCP server plus the role each of its components needs: declared once, checked always."""

    def __init__(self, runtime: Runtime, local_identity: Identity | None = None) -> None:
        self.runtime = runtime
        self.local_identity = local_identity
        self.mcp = FastMCP(
            "analytics-mcp", instructions=INSTRUCTIONS, mask_error_details=True, version=package_version()
        )
        # (kind, declared name or URI template) -> the roles that may use it; undeclared: nobody.
        self.roles: dict[tuple[str, str], frozenset[Role]] = {}

    def tool(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            name = options.get("name") or function.__name__
            self.roles[("tool", name)] = roles
            return self.mcp.tool(_answering_errors(function, "tool", ToolError), **options)

        return register

    def resource(
        self, uri: str, *, roles: frozenset[Role], **options: Any
    ) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            self.roles[("resource", uri)] = roles
            return self.mcp.resource(uri, **options)(_answering_errors(function, "resource", ResourceError))

        return register

    def prompt(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            name = options.get("name") or function.__name__
            self.roles[("prompt", name)] = roles
            return self.mcp.prompt(_answering_errors(function, "prompt", PromptError), **options)

        return register

    def roles_for(self, kind: str, name: str) -> frozenset[Role]:
        # Undeclared means nobody: a new component without a role declaration is refused, not open.
        return self.roles.get((kind, name), frozenset())


def _answering_errors(
    function: Callable[..., Any], kind: str, failure: type[FastMCPError]
) -> Callable[..., Any]:
    """Domain errors become their one-line message; anything else a generic line with a request id.

    This runs inside the component, before FastMCP's own handler, which would otherwise log the
    exception text (possibly data) with a traceback and mask the message we want the agent to see.
    What reaches FastMCP is already answered (and logged here if it was a fault): its own "Error
    calling tool" line is only debug detail (QUIET).
    """

    @functools.wraps(function)
    async def answered(*args: Any, **kwargs: Any) -> Any:
        try:
            result = function(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except AnalyticsError as error:
            raise failure(error.message, log_level=QUIET) from None
        except (ToolError, ResourceError, PromptError):
            raise
        except REDIS_DOWN as error:
            log.warning("redis unavailable", extra={"error": type(error).__name__})
            raise failure(
                "Redis (the session and cache store) is not answering; retry shortly", log_level=QUIET
            ) from None
        except redis.exceptions.OutOfMemoryError:
            # The session Redis runs with maxmemory and noeviction: full means writes are refused.
            log.warning("redis is full", extra={"kind": kind, "component": function.__name__})
            raise failure(
                "the session store is full; close or delete sessions you no longer need and retry, "
                "or ask the operator to raise REDIS_MAXMEMORY",
                log_level=QUIET,
            ) from None
        except POSTGRES_DOWN as error:
            log.warning("postgres unavailable", extra={"error": type(error).__name__})
            raise failure("PostgreSQL is not answering; retry shortly", log_level=QUIET) from None
        except Exception:
            request_id = logs.request_id_var.get() or "-"
            log.exception("unexpected error", extra={"kind": kind, "component": function.__name__})
            raise failure(
                f"internal error while serving {kind} '{function.__name__}'; request id {request_id}",
                log_level=QUIET,
            ) from None

    return answered
