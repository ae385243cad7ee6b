"""The read API under /api/v1: JSON over the same keys and roles as MCP. /api/v1/health and
/api/v1/openapi.json are public; everything else needs X-API-Key or Authorization: Bearer."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from console import records
from console.openapi import document
from core.errors import (
    AnalyticsError,
    Forbidden,
    InvalidInput,
    NotFound,
    QueryRefused,
    RateLimited,
    Timeout,
    Unavailable,
)
from mcp_server import datasets, logs
from mcp_server.auth import ADMIN, ANALYST, EVERYONE, Identity, http_identity, require_role
from mcp_server.config import Role
from mcp_server.runtime import Runtime
from mcp_server.tools.data import load_generated
from warehouse.generator import make_plan
from warehouse.shop import shop_plan
from warehouse.sources import MAIN

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
STATUS: tuple[tuple[type[AnalyticsError], int, str], ...] = (
    (InvalidInput, 400, "invalid_input"),
    (QueryRefused, 400, "query_refused"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (RateLimited, 429, "rate_limited"),
    (Timeout, 504, "timeout"),
    (Unavailable, 503, "unavailable"),
)
MAX_BODY_BYTES = 4_096
GENERATE_MAX_CUSTOMERS = 2_000_000

Handler = Callable[[Request, Identity], Awaitable[Any]]


def refusal(error: AnalyticsError) -> tuple[int, str]:
    for kind, status, code in STATUS:
        if isinstance(error, kind):
            return status, code
    return 400, "invalid_input"


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


async def audit(runtime: Runtime, identity: Identity | None, event: str, outcome: str, **row: Any) -> None:
    """One audit row for an operator action (console or API): who, what, how it ended; never arguments."""
    await runtime.services.auditor.event(
        event, identity, outcome, request_id=logs.request_id_var.get(), **row
    )


def endpoint(runtime: Runtime, roles: frozenset[Role], what: str) -> Callable[[Handler], Any]:
    """A JSON endpoint: 401 without a valid key, 403 for a role not in `roles`, domain errors as one line."""

    def wrap(handler: Handler) -> Any:
        @functools.wraps(handler)
        async def answered(request: Request) -> Response:
            identity = http_identity(request.scope)
            if identity is None:
                return JSONResponse(
                    {
                        "error": "unauthorized",
                        "detail": "send a valid key as X-API-Key or Authorization: Bearer",
                    },
                    status_code=401,
                    headers={"www-authenticate": 'Bearer realm="analytics-mcp"'},
                )
            with logs.request_bound(logs.new_request_id(), identity.user_id):
                try:
                    require_role(identity, roles, what)
                    # Each call spends one unit of the key's RATE_LIMIT_PER_MINUTE, as an MCP call does.
                    await runtime.services.rate_limiter.admit(identity.key_id)
                    answer = await handler(request, identity)
                except AnalyticsError as error:
                    status, code = refusal(error)
                    if status == 403:
                        await audit(runtime, identity, "api_call", "forbidden", tool=what)
                    response = error_response(status, code, error.message)
                    if isinstance(error, RateLimited):
                        response.headers["retry-after"] = str(max(1, round(error.retry_after)))
                    return response
                except Exception:
                    log.exception("read API failure", extra={"endpoint": what})
                    request_id = logs.request_id_var.get()
                    return error_response(
                        500, "internal", f"internal error in {what}; request id {request_id}"
                    )
                return answer if isinstance(answer, Response) else JSONResponse(answer)

        return answered

    return wrap


def routes(runtime: Runtime) -> list[tuple[str, list[str], Callable[[Request], Awaitable[Response]]]]:
    """(path, methods, endpoint) of every /api/v1 route."""

    async def openapi(request: Request) -> Response:
        return JSONResponse(document(), headers={"cache-control": "no-cache"})

    async def health(request: Request) -> Response:
        status, body = await records.health(runtime)
        return JSONResponse(body, status_code=status)

    @endpoint(runtime, EVERYONE, "sources")
    async def sources(request: Request, identity: Identity) -> Any:
        return {"sources": await records.sources(runtime)}

    @endpoint(runtime, EVERYONE, "tables")
    async def tables(request: Request, identity: Identity) -> Any:
        source = runtime.sources.source(request.path_params["source"]).name
        if source == MAIN:  # like schema://database/main: the built-in database is for analysts
            require_role(identity, ANALYST, "the built-in database's tables")
        return {"source": source, "tables": await records.tables(runtime, source)}

    @endpoint(runtime, ANALYST, "rows")
    async def rows(request: Request, identity: Identity) -> Any:
        query = request.query_params
        which = records.RowFilter.of(
            query.getlist("filter"),
            query.get("date_column"),
            query.get("since"),
            query.get("until"),
            query.get("order_by"),
        )
        page = records.Page.of(query.get("limit"), query.get("offset"))
        return await records.table_rows(
            runtime, request.path_params["source"], request.path_params["table"], which, page
        )

    @endpoint(runtime, ADMIN, "query log")
    async def query_log(request: Request, identity: Identity) -> Any:
        filters = records.LogFilter.of(request.query_params, "source")
        page = records.Page.of(request.query_params.get("limit"), request.query_params.get("offset"))
        return await records.query_log(runtime, filters, page)

    @endpoint(runtime, ADMIN, "audit trail")
    async def audit_log(request: Request, identity: Identity) -> Any:
        filters = records.LogFilter.of(request.query_params, "event")
        page = records.Page.of(request.query_params.get("limit"), request.query_params.get("offset"))
        return await records.audit_log(runtime, filters, page)

    @endpoint(runtime, ADMIN, "generate")
    async def generate(request: Request, identity: Identity) -> Any:
        body = await _json_body(request)
        customers = _bounded(body.get("customers", 5_000), "customers", 1, GENERATE_MAX_CUSTOMERS)
        seed = _bounded(body.get("seed", 42), "seed", 0, 2**62)
        start, end = body.get("start_date"), body.get("end_date")
        for name, value in (("start_date", start), ("end_date", end)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{name} is a date as YYYY-MM-DD")
        dataset, source = body.get("dataset", "telecom"), body.get("source", MAIN)
        if dataset not in ("telecom", "shop") or not isinstance(source, str) or len(source) > 64:
            raise InvalidInput("dataset is telecom or shop; source is a source name (GET /api/v1/sources)")
        if dataset == "shop":
            answer = await datasets.generate_shop(runtime, source, shop_plan(customers, seed, start, end))
        else:
            datasets.check_dataset(dataset, source)
            answer = await load_generated(runtime, make_plan(customers, seed, start, end))
        await audit(runtime, identity, "api_generate", "ok", tool="generate")
        return answer

    @endpoint(runtime, ADMIN, "reset")
    async def reset(request: Request, identity: Identity) -> Any:
        if request.query_params.get("confirm") != "true":
            raise InvalidInput(
                "reset replaces every analytics row with the demo data; repeat with confirm=true to do it"
            )
        dataset = request.query_params.get("dataset", "telecom")
        if dataset == "shop":  # the shop's tables emptied, children first: counts before and after
            answer = await datasets.reset(runtime, request.query_params.get("source", MAIN)[:64], "shop")
        elif dataset == "telecom":
            settings = runtime.settings
            answer = await load_generated(runtime, make_plan(settings.demo_customers, settings.demo_seed))
        else:
            raise InvalidInput("dataset is telecom or shop")
        await audit(runtime, identity, "api_reset", "ok", tool="reset")
        return answer

    return [
        (f"{PREFIX}/openapi.json", ["GET"], openapi),
        (f"{PREFIX}/health", ["GET"], health),
        (f"{PREFIX}/sources", ["GET"], sources),
        (f"{PREFIX}/sources/{{source}}/tables", ["GET"], tables),
        (f"{PREFIX}/sources/{{source}}/tables/{{table}}/rows", ["GET"], rows),
        (f"{PREFIX}/query-log", ["GET"], query_log),
        (f"{PREFIX}/audit-log", ["GET"], audit_log),
        (f"{PREFIX}/admin/generate", ["POST"], generate),
        (f"{PREFIX}/admin/reset", ["POST"], reset),
    ]


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInput(f"the request body is at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidInput('the request body is a JSON object, e.g. {"customers": 1000, "seed": 7}') from None
    if not isinstance(body, dict):
        raise InvalidInput('the request body is a JSON object, e.g. {"customers": 1000, "seed": 7}')
    return body


def _bounded(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} is a whole number from {low} to {high:,}")
    return value
