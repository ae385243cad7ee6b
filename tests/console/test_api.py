"""The read API under /api/v1: public health and OpenAPI document, keys and roles as MCP, paginated and
filtered rows checked against plain SQL and pandas, the query log without values, the demo actions,
and schemathesis against the OpenAPI document (no server error)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from fastmcp import Client

from console.records import MAX_LIMIT
from tests.conftest import app_for
from tests.console.conftest import CUSTOMERS, DEMO_CUSTOMERS, PLANS, plain_sql
from tests.support import call, refusal

pytestmark = pytest.mark.http

PROTECTED = [
    ("GET", "/api/v1/sources"),
    ("GET", "/api/v1/sources/main/tables"),
    ("GET", "/api/v1/sources/main/tables/customers/rows"),
    ("GET", "/api/v1/query-log"),
    ("GET", "/api/v1/audit-log"),
    ("POST", "/api/v1/admin/generate"),
    ("POST", "/api/v1/admin/reset?confirm=true"),
]
ADMIN_ONLY = [route for route in PROTECTED if "log" in route[1] or "admin" in route[1]]


def key(api_keys, user):
    return {"X-API-Key": api_keys[user]}


async def test_the_openapi_document_and_health_are_public(http):
    document = (await http.get("/api/v1/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert "/api/v1/sources/{source}/tables/{table}/rows" in document["paths"]
    health = await http.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json()["components"] == {"postgres": "ok", "redis": "ok"}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_other_route_without_a_key_gets_401(http, method, path):
    response = await http.request(method, path)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    wrong = await http.request(method, path, headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
@pytest.mark.parametrize("user", ["viewer", "analyst"])
async def test_admin_routes_refuse_viewers_and_analysts_with_403(http, api_keys, method, path, user):
    response = await http.request(method, path, headers=key(api_keys, user))
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


async def test_a_viewer_may_list_sources_but_not_read_rows(http, api_keys):
    listed = await http.get("/api/v1/sources", headers=key(api_keys, "viewer"))
    assert listed.status_code == 200
    assert {s["name"] for s in listed.json()["sources"]} == {"main", "exports"}
    rows = await http.get("/api/v1/sources/exports/tables/plans/rows", headers=key(api_keys, "viewer"))
    assert rows.status_code == 403


async def test_sources_never_show_a_password(http, api_keys, console_runtime):
    body = (await http.get("/api/v1/sources", headers=key(api_keys, "admin"))).text
    exports = console_runtime.sources.registry.get("exports")
    assert str(exports.directory) not in body  # the folder's name only, never the server's path
    assert "files://.../data" in body


async def test_rows_of_main_are_filtered_ordered_and_paged_like_plain_sql(http, api_keys, console_runtime):
    since = "2024-06-01"
    expected = await plain_sql(
        console_runtime,
        "SELECT customer_id::text AS id FROM customers WHERE account_type = 'Basic' AND created_at >= $1 "
        "ORDER BY customer_id",
        dt.datetime(2024, 6, 1),
    )
    expected_ids = [row["id"] for row in expected]
    assert len(expected_ids) > 14
    seen, offset = [], 0
    while offset is not None:
        response = await http.get(
            "/api/v1/sources/main/tables/customers/rows",
            params={
                "filter": "account_type:Basic",
                "date_column": "created_at",
                "since": since,
                "limit": 7,
                "offset": offset,
            },
            headers=key(api_keys, "analyst"),
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["rows"]) <= 7
        assert all(row["account_type"] == "Basic" for row in page["rows"])
        seen += [row["customer_id"] for row in page["rows"]]
        offset = page["next_offset"]
    assert seen == expected_ids


async def test_rows_of_a_files_source_match_pandas(http, api_keys):
    response = await http.get(
        "/api/v1/sources/exports/tables/plans/rows",
        params=[
            ("filter", "plan:basic"),
            ("date_column", "started"),
            ("since", "2024-01-10"),
            ("order_by", "started"),
        ],
        headers=key(api_keys, "analyst"),
    )
    assert response.status_code == 200, response.text
    expected = PLANS[(PLANS.plan == "basic") & (PLANS.started >= "2024-01-10")].sort_values("started")
    assert [row["started"][:10] for row in response.json()["rows"]] == [
        day.strftime("%Y-%m-%d") for day in expected.started
    ]


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"limit": MAX_LIMIT + 1}, 400, "limit is between 1 and 500"),
        ({"limit": 0}, 400, "limit is between"),
        ({"offset": -1}, 400, "offset is between"),
        ({"filter": "nope:1"}, 400, "column 'nope' is not in main.customers; columns: customer_id"),
        ({"filter": 'age" = 1 OR "1:1'}, 400, "is not in main.customers"),
        ({"order_by": "age; DROP TABLE customers"}, 400, "is not in main.customers"),
        ({"since": "2024-01-01"}, 400, "since and until need date_column"),
        ({"date_column": "created_at", "since": "yesterday"}, 400, "ISO date"),
        ({"filter": "age:not-a-number"}, 400, ""),
    ],
)
async def test_bad_row_reads_are_refused_in_one_line(http, api_keys, console_runtime, params, status, says):
    response = await http.get(
        "/api/v1/sources/main/tables/customers/rows", params=params, headers=key(api_keys, "analyst")
    )
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert says in detail and "\n" not in detail
    assert (await plain_sql(console_runtime, "SELECT count(*) FROM customers"))[0][0] > 0  # nothing dropped


async def test_an_unknown_table_or_source_is_404(http, api_keys):
    table = await http.get("/api/v1/sources/main/tables/secrets/rows", headers=key(api_keys, "analyst"))
    assert table.status_code == 404 and "tables: customers" in table.json()["detail"]
    source = await http.get("/api/v1/sources/nowhere/tables", headers=key(api_keys, "analyst"))
    assert source.status_code == 404


async def test_the_query_log_shows_an_mcp_query_with_its_duration_and_without_values(
    http, api_keys, console_runtime
):
    secret = "Premium-7f3a"
    async with Client(app_for(console_runtime, "analyst2").mcp) as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT account_type AS plan, count(*) AS n FROM customers c "
            "WHERE c.account_type <> %(hidden)s AND c.age > 21 GROUP BY account_type",
            parameters={"hidden": secret},
        )
        assert answer["row_count"] == 3
        await refusal(
            client, "query_database", query="DELETE FROM customers WHERE location = 'Atlantis-424242'"
        )
    await console_runtime.services.query_log.flush()
    response = await http.get(
        "/api/v1/query-log", params={"user": "analyst2"}, headers=key(api_keys, "admin")
    )
    entries = response.json()["entries"]
    assert [entry["outcome"] for entry in entries] == ["refused", "ok"]
    ok = entries[1]
    assert ok["query"] == (
        "select account_type as plan, count(*) as n from customers c "
        "where c.account_type <> %(hidden)s and c.age > ? group by account_type"
    )
    assert secret not in response.text and "21" not in ok["query"] and "424242" not in response.text
    assert entries[0]["query"] == "delete from customers where location = ?"
    (stored,) = await plain_sql(
        console_runtime, "SELECT duration_ms, row_count FROM mcp_internal.query_log WHERE id = $1", ok["id"]
    )
    assert (
        ok["duration_ms"] == round(stored["duration_ms"], 3) and ok["row_count"] == stored["row_count"] == 3
    )
    refused = await http.get(
        "/api/v1/query-log", params={"user": "analyst2", "outcome": "refused"}, headers=key(api_keys, "admin")
    )
    assert [entry["id"] for entry in refused.json()["entries"]] == [entries[0]["id"]]
    later = await http.get(
        "/api/v1/query-log",
        params={"user": "analyst2", "since": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()},
        headers=key(api_keys, "admin"),
    )
    assert later.json()["entries"] == []


async def test_reset_needs_confirm_and_generate_replaces_the_data(http, api_keys, console_runtime):
    admin = key(api_keys, "admin")
    unconfirmed = await http.post("/api/v1/admin/reset", headers=admin)
    assert unconfirmed.status_code == 400 and "confirm=true" in unconfirmed.json()["detail"]
    bad = await http.post("/api/v1/admin/generate", json={"customers": 0}, headers=admin)
    assert bad.status_code == 400
    generated = await http.post("/api/v1/admin/generate", json={"customers": 40, "seed": 3}, headers=admin)
    assert generated.status_code == 200, generated.text
    counts = await plain_sql(
        console_runtime, "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM network_events)"
    )
    assert tuple(counts[0]) == (40, generated.json()["network_events"])
    reset = await http.post("/api/v1/admin/reset", params={"confirm": "true"}, headers=admin)
    assert reset.status_code == 200, reset.text
    assert (await plain_sql(console_runtime, "SELECT count(*) FROM customers"))[0][0] == DEMO_CUSTOMERS
    await console_runtime.services.auditor.flush()
    audit = await http.get("/api/v1/audit-log", params={"event": "api_reset"}, headers=admin)
    assert [entry["user_id"] for entry in audit.json()["entries"]] == ["admin"]
    assert CUSTOMERS != DEMO_CUSTOMERS  # the reset is visible


def _schemathesis(url: str, headers: dict[str, str]) -> int:
    """Every GET of the document, generated from its schema, with no 5xx and answers that match it."""
    import hypothesis
    import schemathesis
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET":
            continue  # generate and reset replace the data: tested above, not fuzzed

        @hypothesis.settings(
            max_examples=50,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case):
            nonlocal calls
            calls += 1
            case.call_and_validate(
                base_url=url,
                headers=headers,
                checks=[checks.not_a_server_error, checks.response_schema_conformance],
            )

        check()
    return calls


@pytest.mark.slow
async def test_the_api_answers_its_openapi_document_without_a_server_error(base_url, api_keys):
    calls = await asyncio.to_thread(_schemathesis, base_url, key(api_keys, "admin"))
    assert calls >= 200


async def test_api_calls_spend_the_keys_rate_limit_and_get_429_with_retry_after(
    make_runtime, api_keys, redis_prefix
):
    import uuid

    import httpx

    from tests.support import serving

    prefix = f"{redis_prefix}limited-{uuid.uuid4().hex[:6]}:"  # counters of its own, cleaned with the rest
    async with (
        make_runtime(customers=None, rate_limit_per_minute=2, redis_key_prefix=prefix) as limited,
        serving(limited) as url,
    ):
        async with httpx.AsyncClient(base_url=url) as http:
            answers = [await http.get("/api/v1/sources", headers=key(api_keys, "viewer")) for _ in range(3)]
            other = await http.get("/api/v1/sources", headers=key(api_keys, "analyst"))
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1
    assert other.status_code == 200  # per key


async def test_generate_takes_the_shop_dataset_into_the_built_in_database(http, api_keys, console_runtime):
    admin = key(api_keys, "admin")
    wrong = await http.post(
        "/api/v1/admin/generate", json={"dataset": "telecom", "source": "x"}, headers=admin
    )
    assert wrong.status_code == 400 and "built-in database only" in wrong.json()["detail"]
    unknown = await http.post("/api/v1/admin/generate", json={"dataset": "bank"}, headers=admin)
    assert unknown.status_code == 400 and "telecom or shop" in unknown.json()["detail"]
    shop = await http.post(
        "/api/v1/admin/generate", json={"dataset": "shop", "customers": 60, "seed": 4}, headers=admin
    )
    assert shop.status_code == 200, shop.text
    answer = shop.json()
    counts = await plain_sql(
        console_runtime, "SELECT (SELECT count(*) FROM shop.customers), (SELECT count(*) FROM shop.orders)"
    )
    assert tuple(counts[0]) == (60, answer["tables"]["orders"]) and answer["source"] == "main"
    emptied = await http.post(
        "/api/v1/admin/reset", params={"confirm": "true", "dataset": "shop"}, headers=admin
    )
    assert emptied.status_code == 200, emptied.text
    assert emptied.json()["tables"]["customers"] == {"before": 60, "after": 0}
    assert (await plain_sql(console_runtime, "SELECT count(*) FROM shop.orders"))[0][0] == 0


async def test_an_operator_request_is_logged_and_audited_under_a_request_id_of_its_own(
    http, api_keys, console_runtime
):
    for _ in range(2):
        response = await http.get("/api/v1/query-log", headers=key(api_keys, "viewer"))
        assert response.status_code == 403
    await console_runtime.services.auditor.flush()
    rows = await plain_sql(
        console_runtime,
        "SELECT request_id FROM mcp_internal.audit_log WHERE event = 'api_call' AND user_id = 'viewer' "
        "AND outcome = 'forbidden' ORDER BY id DESC LIMIT 2",
    )
    ids = [row["request_id"] for row in rows]
    assert len(ids) == 2 and all(id_ and len(id_) == 16 for id_ in ids), ids
    assert ids[0] != ids[1], "one request id per request"
