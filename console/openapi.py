"""The read API's OpenAPI 3.1 document, written by hand: what /api/v1/openapi.json serves."""

from __future__ import annotations

import functools
from typing import Any

from console.records import DEFAULT_LIMIT, MAX_FILTER_CHARS, MAX_FILTERS, MAX_LIMIT, MAX_OFFSET
from mcp_server import package_version

NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"}
MOMENT = {
    "type": "string",
    "description": "ISO 8601 date or date-time (UTC when no offset), e.g. 2025-01-31 or 2025-01-31T12:00:00Z",
    "format": "date-time",
}
NULLABLE_TEXT = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
        "description": description,
    }


PAGE = [
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        f"rows per page (at most {MAX_LIMIT})",
    ),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}, "first row"),
]
PAGED = {
    "limit": {"type": "integer"},
    "offset": {"type": "integer"},
    "next_offset": NULLABLE_INTEGER,
    "previous_offset": NULLABLE_INTEGER,
}
ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


def _answers(schema: dict[str, Any], *statuses: int) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
    }
    reasons = {
        400: "invalid input (one line saying what to fix)",
        401: "no valid key",
        403: "the key's role may not do this",
        404: "no such source or table",
        503: "a dependency is down",
        504: "the read took too long",
    }
    for status in statuses:
        answers[str(status)] = {
            "description": reasons[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return answers


SECURED: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
GUARDED = (400, 401, 403, 503)


@functools.cache
def document() -> dict[str, Any]:
    health = {
        "type": "object",
        "required": ["status", "components", "failing"],
        "properties": {
            "status": {"enum": ["ok", "degraded", "unavailable"]},
            "components": {"type": "object", "additionalProperties": {"type": "string"}},
            "failing": {"type": "array", "items": {"type": "string"}},
            "writers": {"type": "object"},
        },
    }
    column = {"type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}
    table = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "row_estimate": NULLABLE_INTEGER,
            "columns": {"type": "array", "items": column},
        },
    }
    source = {
        "type": "object",
        "required": ["name", "engine", "url", "tables"],
        "properties": {
            "name": {"type": "string"},
            "engine": {"type": "string"},
            "description": {"type": "string"},
            "url": {"type": "string", "description": "the source's URL with its password as ***"},
            "profiled_at": NULLABLE_TEXT,
            "error": NULLABLE_TEXT,
            "tables": {"type": "array", "items": table},
        },
    }
    query_entry = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "logged_at": {"type": "string"},
            "user_id": {"type": "string"},
            "source": {"type": "string"},
            "outcome": {"type": "string"},
            "cached": {"type": "boolean"},
            "duration_ms": {"type": "number"},
            "row_count": NULLABLE_INTEGER,
            "query_hash": {"type": "string"},
            "query": {**NULLABLE_TEXT, "description": "the query with its literals shown as ?"},
        },
    }
    audit_entry = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "logged_at": {"type": "string"},
            "event": {"type": "string"},
            "user_id": NULLABLE_TEXT,
            "key_id": NULLABLE_TEXT,
            "tool": NULLABLE_TEXT,
            "session_id": NULLABLE_TEXT,
            "duration_ms": NULLABLE_NUMBER,
            "outcome": {"type": "string"},
        },
    }
    log_filters = [
        _query("user", NAME, "only this user's entries"),
        _query("outcome", NAME, "only this outcome (ok, truncated, refused, timeout, error ...)"),
        _query("since", MOMENT, "entries at or after this time"),
        _query("until", MOMENT, "entries before this time"),
    ]
    load = {
        "type": "object",
        "properties": {
            "customers": {"type": "integer"},
            "network_events": {"type": "integer"},
            "revenue": {"type": "integer"},
            "rows": {"type": "integer"},
            "seconds": {"type": "number"},
            "seed": {"type": "integer"},
            "start_date": {"type": "string"},
            "end_date": {"type": "string"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "analytics-mcp read API",
            "version": package_version(),
            "description": "Health, sources and their tables, paginated rows, the query log and the audit "
            "trail, and the demo data actions. Same keys and roles as MCP.",
        },
        "paths": {
            "/api/v1/health": {
                "get": {
                    "summary": "Health of PostgreSQL, Redis and the background writers (public)",
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": {"description": "OK", "content": {"application/json": {"schema": health}}},
                        "503": {
                            "description": "a dependency is down",
                            "content": {"application/json": {"schema": health}},
                        },
                    },
                }
            },
            "/api/v1/sources": {
                "get": {
                    "summary": "The data sources with their tables (any role)",
                    "operationId": "listSources",
                    "responses": _answers(
                        {
                            "type": "object",
                            "required": ["sources"],
                            "properties": {"sources": {"type": "array", "items": source}},
                        },
                        401,
                        503,
                    ),
                }
            },
            "/api/v1/sources/{source}/tables": {
                "get": {
                    "summary": "A source's tables and columns (the built-in `main`: analyst or admin)",
                    "operationId": "listTables",
                    "parameters": [_path("source", "a source name from /api/v1/sources")],
                    "responses": _answers(
                        {
                            "type": "object",
                            "required": ["source", "tables"],
                            "properties": {
                                "source": {"type": "string"},
                                "tables": {"type": "array", "items": table},
                            },
                        },
                        *GUARDED,
                        404,
                    ),
                }
            },
            "/api/v1/sources/{source}/tables/{table}/rows": {
                "get": {
                    "summary": "One page of a table's rows, filtered (analyst or admin)",
                    "operationId": "readRows",
                    "parameters": [
                        _path("source", "a source name"),
                        _path("table", "a table of that source"),
                        {
                            **_query(
                                "filter",
                                {
                                    "type": "array",
                                    "maxItems": MAX_FILTERS,
                                    "items": {"type": "string", "maxLength": 64 + MAX_FILTER_CHARS},
                                },
                                "column:value equality filters, e.g. filter=account_type:Basic",
                            ),
                            "style": "form",
                            "explode": True,
                        },
                        _query(
                            "date_column",
                            {"type": "string", "maxLength": 64},
                            "the column since/until apply to",
                        ),
                        _query("since", MOMENT, "rows whose date_column is at or after this"),
                        _query("until", MOMENT, "rows whose date_column is before this"),
                        _query(
                            "order_by", {"type": "string", "maxLength": 64}, "a column (default: the first)"
                        ),
                        *PAGE,
                    ],
                    "responses": _answers(
                        {
                            "type": "object",
                            "required": ["columns", "rows"],
                            "properties": {
                                "source": {"type": "string"},
                                "table": {"type": "string"},
                                "columns": {"type": "array", "items": {"type": "string"}},
                                "rows": {"type": "array", "items": {"type": "object"}},
                                "truncated_by": NULLABLE_TEXT,
                                **PAGED,
                            },
                        },
                        *GUARDED,
                        404,
                        504,
                    ),
                }
            },
            "/api/v1/query-log": {
                "get": {
                    "summary": "The query log, newest first (admin): never parameter values",
                    "operationId": "queryLog",
                    "parameters": [*log_filters, _query("source", NAME, "only this source"), *PAGE],
                    "responses": _answers(
                        {
                            "type": "object",
                            "required": ["entries"],
                            "properties": {"entries": {"type": "array", "items": query_entry}, **PAGED},
                        },
                        *GUARDED,
                    ),
                }
            },
            "/api/v1/audit-log": {
                "get": {
                    "summary": "The audit trail, newest first (admin)",
                    "operationId": "auditLog",
                    "parameters": [*log_filters, _query("event", NAME, "only this event"), *PAGE],
                    "responses": _answers(
                        {
                            "type": "object",
                            "required": ["entries"],
                            "properties": {"entries": {"type": "array", "items": audit_entry}, **PAGED},
                        },
                        *GUARDED,
                    ),
                }
            },
            "/api/v1/admin/generate": {
                "post": {
                    "summary": "Replace a demo dataset (telecom in main, or the shop in a source) with generated data (admin)",
                    "operationId": "generate",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "dataset": {"type": "string", "enum": ["telecom", "shop"]},
                                        "source": {"type": "string", "maxLength": 64},
                                        "customers": {"type": "integer", "minimum": 1, "maximum": 2_000_000},
                                        "seed": {"type": "integer", "minimum": 0},
                                        "start_date": {"type": "string", "format": "date"},
                                        "end_date": {"type": "string", "format": "date"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": _answers(load, *GUARDED),
                }
            },
            "/api/v1/admin/reset": {
                "post": {
                    "summary": "Restore the demo data the server starts with (admin; confirm=true)",
                    "operationId": "reset",
                    "parameters": [
                        {**_query("confirm", {"enum": ["true"]}, "must be true"), "required": True},
                        _query(
                            "dataset",
                            {"enum": ["telecom", "shop"]},
                            "telecom (default): restore the demo data; shop: empty the shop's tables",
                        ),
                        _query(
                            "source",
                            {"type": "string", "maxLength": 64},
                            "with dataset=shop: the source holding it (default main)",
                        ),
                    ],
                    "responses": _answers(load, *GUARDED),
                }
            },
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {"Error": ERROR},
        },
        "security": SECURED,
    }
