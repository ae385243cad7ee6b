"""Hot reload across instances: two servers on one database, one Redis and one key prefix, reading the
same sources file. Instance A polls the file every second, B only every 60 s, so when B shows an edit
within seconds only the Redis notice A sent can explain it. Also: hostile messages on the channel change
nothing, polling carries on while a (separate, private) Redis is down, and QUERY_ALLOWED_FUNCTIONS
applies to a PostgreSQL source other than main."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from fastmcp import Client

import warehouse.engines.duckdb_files  # noqa: F401 - see below
from mcp_server.app import App
from mcp_server.config import Settings
from mcp_server.runtime import Runtime, start_runtime
from tests.conftest import app_for
from tests.support import call, free_port, refusal
from warehouse import sqlguard
from warehouse.notices import MAX_NOTICE_BYTES, ProfilesRefreshed, SourcesChanged, read_notice

# Imported up front: a process imports DuckDB when it starts its first files source, and the two
# instances here share one process and event loop, so that one-off import would stall both at once.

READER = f"amcp_pubsub_reader_{secrets.token_hex(4)}"
PASSWORD = secrets.token_urlsafe(12)
DEADLINE = 5.0  # seconds: the "visible in the other instance within 5 s"
SLOW_POLL = 60  # B's sources file polling: far slower than any deadline here

SETUP = [
    "CREATE SCHEMA sales",
    "CREATE TABLE sales.orders (id int PRIMARY KEY, amount numeric(10,2))",
    "INSERT INTO sales.orders VALUES (1, 10.50), (2, 20.00), (3, 5.25)",
    "CREATE FUNCTION sales.twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'",
    "CREATE FUNCTION sales.thrice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 3'",
    f"CREATE ROLE {READER} LOGIN PASSWORD '{PASSWORD}'",
    f"GRANT USAGE ON SCHEMA sales TO {READER}",
    f"GRANT SELECT ON ALL TABLES IN SCHEMA sales TO {READER}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA sales GRANT SELECT ON TABLES TO {READER}",
]


def _as_reader(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{READER}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"))


async def _admin(url: str, *statements: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        results = []
        for statement in statements:
            results.append(await conn.fetch(statement))
        return results
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = DEADLINE) -> float:
    """Poll `check` until it holds; the seconds it took. Fails the test after `seconds`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
async def warehouse_url(create_database: Callable[[], Any]) -> AsyncIterator[str]:
    """The admin URL of a second PostgreSQL database: the source `warehouse`, read by a plain role."""
    url = await create_database()
    await _admin(url, *SETUP)
    yield url
    await _admin(url, f"DROP OWNED BY {READER}", f"DROP ROLE IF EXISTS {READER}")


def _toml(*extra: str) -> str:
    entries = ['[sources.warehouse]\nurl = "${WAREHOUSE_URL}"\nschemas = ["sales"]\n', *extra]
    return "\n".join(entries)


def _files_entry(name: str, folder: Path) -> str:
    return f'[sources.{name}]\nurl = "files://{folder}"\n'


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pubsub-exports")
    (folder / "visits.csv").write_text("day,visits\n2024-01-01,3\n2024-01-02,5\n")
    return folder


_APPS: dict[tuple[int, str], App] = {}  # the servers built for each running instance, by user


@asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(settings, seed_demo=False)
    try:
        yield runtime
    finally:
        for key in [key for key in _APPS if key[0] == id(runtime)]:
            del _APPS[key]
        await runtime.close()


@pytest.fixture(scope="module")
async def keep_function_policy() -> AsyncIterator[None]:
    """Runtimes install their process-wide guard policy (with QUERY_ALLOWED_FUNCTIONS); put it back."""
    before = sqlguard.function_policy()
    yield
    sqlguard.use_function_policy(before)


@pytest.fixture(scope="module")
async def pair(
    base_settings: Settings,
    create_database: Callable[[], Any],
    redis_cleanup: None,
    warehouse_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    keep_function_policy: None,
) -> AsyncIterator[tuple[Runtime, Runtime, Path]]:
    """Instances A (polls every 1 s) and B (every 60 s, schema pages cached an hour) of one deployment:
    one database, one Redis and key prefix, one sources file."""
    toml = tmp_path_factory.mktemp("pubsub") / "sources.toml"
    toml.write_text(_toml())
    shared = base_settings.with_changes(
        database_url=await create_database(),
        sources_path=toml,
        sources_env={"WAREHOUSE_URL": _as_reader(warehouse_url)},
        query_allowed_functions=frozenset({"sales.twice"}),
    )
    async with instance(shared.with_changes(sources_poll_seconds=1)) as a:
        async with instance(
            shared.with_changes(sources_poll_seconds=SLOW_POLL, schema_cache_seconds=3600)
        ) as b:
            await eventually(lambda: _listening(a, b))
            yield a, b, toml


async def _listening(*runtimes: Runtime) -> bool:
    return all(rt.notices is not None and rt.notices.listening for rt in runtimes)


def _client(runtime: Runtime, user: str = "admin") -> Client:
    """An in-memory client of `runtime` as `user` (each server built once: polling loops stay cheap)."""
    key = (id(runtime), user)
    if key not in _APPS:
        _APPS[key] = app_for(runtime, user)
    return Client(_APPS[key].mcp)


async def _listed(runtime: Runtime) -> dict[str, dict[str, Any]]:
    async with _client(runtime, "viewer") as client:
        answer = await call(client, "list_sources")
    return {source["name"]: source for source in answer["sources"]}


def _notices(runtime: Runtime) -> Any:
    assert runtime.notices is not None
    return runtime.notices


# --- the notices themselves -----------------------------------------------------------------------

SENDER = "0123456789abcdef0123456789abcdef"
DIGEST = "ab" * 32
HOSTILE: list[bytes] = [
    # Valid but for its size (padding after the JSON): refused unread.
    json.dumps({"event": "profiles_refreshed", "source": "warehouse", "from": SENDER}).encode()
    + b" " * 100_000,
    b"{not json",
    b"\xff\xfe\x00",
    b"null",
    b"[]",
    b'"profiles_refreshed"',
    json.dumps({"event": "drop_sources", "source": "warehouse", "from": SENDER}).encode(),
    json.dumps({"event": "profiles_refreshed", "source": "Warehouse; DROP TABLE x", "from": SENDER}).encode(),
    json.dumps({"event": "profiles_refreshed", "source": "../../etc/passwd", "from": SENDER}).encode(),
    json.dumps({"event": "profiles_refreshed", "source": "warehouse\n", "from": SENDER}).encode(),
    json.dumps({"event": "profiles_refreshed", "source": 7, "from": SENDER}).encode(),
    json.dumps({"event": "profiles_refreshed", "source": "warehouse"}).encode(),
    json.dumps({"event": "profiles_refreshed", "source": "warehouse", "from": "someone"}).encode(),
    json.dumps({"event": "sources_changed", "digest": "x" * 64, "from": SENDER}).encode(),
    json.dumps(
        {"event": "sources_changed", "digest": DIGEST, "from": SENDER, "url": "postgresql://a:b@c/d"}
    ).encode(),
    json.dumps({"event": "sources_changed", "from": SENDER}).encode(),
]


def test_read_notice_accepts_the_two_events_and_nothing_else() -> None:
    changed = read_notice(json.dumps({"event": "sources_changed", "digest": DIGEST, "from": SENDER}))
    refreshed = read_notice(json.dumps({"event": "profiles_refreshed", "source": "shop_2", "from": SENDER}))
    assert changed == SourcesChanged(event="sources_changed", digest=DIGEST, sender=SENDER)
    assert refreshed == ProfilesRefreshed(event="profiles_refreshed", source="shop_2", sender=SENDER)
    assert len(HOSTILE[0]) > MAX_NOTICE_BYTES
    assert [message for message in HOSTILE if read_notice(message) is not None] == []


# --- two instances --------------------------------------------------------------------------------


async def test_a_source_added_to_the_file_reaches_the_slow_polling_instance_within_5_s(
    pair: tuple[Runtime, Runtime, Path], exports: Path
) -> None:
    a, b, toml = pair
    heard = _notices(b).heard
    assert "visits_feed" not in await _listed(b)
    toml.write_text(_toml(_files_entry("visits_feed", exports)))

    async def b_lists_it() -> bool:
        return "visits_feed" in await _listed(b)

    took = await eventually(b_lists_it)
    print(f"source added on A's file visible in B's list_sources after {took:.2f} s")
    listed = await _listed(b)
    assert listed["visits_feed"]["engine"] == "duckdb"
    assert listed["visits_feed"]["tables"][0]["name"] == "visits"
    assert _notices(b).heard > heard  # B polls every 60 s: A's notice is what made it re-read

    async def both_run_the_same_file() -> bool:  # A told B before starting its own new engine
        return a.sources.registry.digest == b.sources.registry.digest

    await eventually(both_run_the_same_file)

    toml.write_text(_toml())  # and taking it out again travels the same way

    async def b_dropped_it() -> bool:
        return "visits_feed" not in await _listed(b)

    await eventually(b_dropped_it)


async def test_refresh_source_on_one_instance_shows_in_the_others_list_and_schema_within_5_s(
    pair: tuple[Runtime, Runtime, Path], warehouse_url: str
) -> None:
    a, b, _ = pair
    for runtime in (a, b):
        assert runtime.profiler is not None
        await runtime.profiler.wait()
    async with _client(b) as client:
        before = (await client.read_resource("schema://warehouse"))[0].text  # cached on B for an hour
    assert "refunds" not in before
    await _admin(
        warehouse_url,
        "CREATE TABLE sales.refunds (id int, amount numeric(10,2))",
        "INSERT INTO sales.refunds VALUES (1, 2.50), (2, NULL)",
    )
    try:
        async with _client(a) as client:
            refreshed = await call(client, "refresh_source", source="warehouse")
        profiled_at = refreshed["tables"][0]["profiled_at"]
        refunds = next(t for t in refreshed["tables"] if t["table"] == "refunds")
        ((counted,),) = await _admin(
            warehouse_url, "SELECT count(*), avg((amount IS NULL)::int)::float8 FROM sales.refunds"
        )
        assert (refunds["row_count"], refunds["columns"][1]["null_share"]) == tuple(counted)

        async def b_shows_the_new_profile() -> bool:
            return (await _listed(b))["warehouse"]["profiled_at"] == profiled_at

        async def b_schema_shows_the_new_table() -> bool:
            async with _client(b) as client:
                return "refunds" in (await client.read_resource("schema://warehouse"))[0].text

        took = await eventually(b_shows_the_new_profile)
        took += await eventually(b_schema_shows_the_new_table)
        print(f"refresh_source on A visible in B's list_sources and schema:// after {took:.2f} s")
    finally:
        await _admin(warehouse_url, "DROP TABLE sales.refunds")


async def test_hostile_messages_on_the_channel_change_nothing(
    pair: tuple[Runtime, Runtime, Path], warehouse_url: str, redis_url: str, redis_prefix: str
) -> None:
    _, b, _ = pair
    async with _client(b) as client:
        page = (await client.read_resource("schema://warehouse"))[0].text  # cached on B for an hour
    registry, notices = b.sources.registry, _notices(b)
    heard, refused = notices.heard, notices.refused
    await _admin(warehouse_url, "CREATE TABLE sales.returns (id int)")
    publisher = aioredis.from_url(redis_url)
    try:
        for message in HOSTILE:
            await publisher.publish(f"{redis_prefix}sources", message)
        # Then one valid notice (a source B does not have): once B heard it, it has read all the above.
        marker = {"event": "profiles_refreshed", "source": "elsewhere", "from": SENDER}
        await publisher.publish(f"{redis_prefix}sources", json.dumps(marker))

        async def marker_heard() -> bool:
            return notices.heard > heard

        await eventually(marker_heard)
        assert notices.refused == refused + len(HOSTILE)
        assert notices.listening
        assert b.sources.registry is registry  # no reload
        async with _client(b) as client:  # the page of `warehouse` was not dropped: it still lacks `returns`
            assert (await client.read_resource("schema://warehouse"))[0].text == page
    finally:
        await publisher.aclose()
        await _admin(warehouse_url, "DROP TABLE sales.returns")


async def test_query_allowed_functions_apply_to_a_second_postgresql_source(
    pair: tuple[Runtime, Runtime, Path], warehouse_url: str
) -> None:
    a, _, _ = pair
    (expected,) = await _admin(warehouse_url, "SELECT id, id * 2 AS doubled FROM sales.orders ORDER BY id")
    async with _client(a, "analyst") as client:
        for query in (
            "SELECT id, sales.twice(id) AS doubled FROM orders ORDER BY id",
            "SELECT id, twice(id) AS doubled FROM orders ORDER BY id",  # sales is the source's first schema
        ):
            answer = await call(client, "query_database", query=query, source="warehouse")
            assert [(row["id"], row["doubled"]) for row in answer["rows"]] == [tuple(r) for r in expected]
        text = await refusal(
            client, "query_database", query="SELECT sales.thrice(id) FROM orders", source="warehouse"
        )
    assert "sales.thrice()" in text and "QUERY_ALLOWED_FUNCTIONS" in text


# --- Redis down -----------------------------------------------------------------------------------


@asynccontextmanager
async def private_redis(port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A redis-server of this test's own on `port` (the shared one is never stopped)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; this test needs it to stop and restart a Redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except Exception:  # noqa: BLE001 - not started yet
                return False

        try:
            await eventually(answers, 10)
        finally:
            await client.aclose()
        yield server
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_with_redis_down_polling_still_reloads_and_notices_resume_when_it_is_back(
    base_settings: Settings,
    create_database: Callable[[], Any],
    warehouse_url: str,
    exports: Path,
    tmp_path: Path,
    keep_function_policy: None,
) -> None:
    port = free_port()
    toml = tmp_path / "sources.toml"
    toml.write_text(_toml())
    shared = base_settings.with_changes(
        database_url=await create_database(),
        redis_url=f"redis://127.0.0.1:{port}/0",
        sources_path=toml,
        sources_env={"WAREHOUSE_URL": _as_reader(warehouse_url)},
    )
    async with private_redis(port) as server:
        async with instance(shared.with_changes(sources_poll_seconds=1)) as c:
            async with instance(shared.with_changes(sources_poll_seconds=SLOW_POLL)) as d:
                await eventually(lambda: _listening(c, d))
                server.terminate()
                server.wait(timeout=10)

                async def both_deaf() -> bool:
                    return not (_notices(c).listening or _notices(d).listening)

                await eventually(both_deaf, 10)
                toml.write_text(_toml(_files_entry("while_down", exports)))

                async def c_lists_it() -> bool:  # polling alone; list_sources still answers
                    return "while_down" in await _listed(c)

                await eventually(c_lists_it)

                async with private_redis(port):  # Redis is back on the same address

                    async def d_lists_it() -> bool:  # D resubscribed and re-read its file once
                        return "while_down" in await _listed(d)

                    await eventually(lambda: _listening(c, d), 15)
                    await eventually(d_lists_it)
                    heard = _notices(d).heard
                    toml.write_text(_toml(_files_entry("after_return", exports)))

                    async def d_hears_again() -> bool:  # notices flow again: D polls every 60 s
                        return "after_return" in await _listed(d)

                    await eventually(d_hears_again)
                    assert _notices(d).heard > heard
