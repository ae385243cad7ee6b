"""A real streaming read replica (pg_basebackup on loopback): queries and analyses read there while the
server's own writes go to the primary; its lag shows on /health and /metrics; when it stops, reads move
to the primary within 20 s (with a warning) and come back when it returns.

The machine's PostgreSQL allows no replication connections (its pg_hba.conf has no `replication`
entry), so each test starts a primary of its own with initdb and builds the replica from that one;
both run as the postgres user in a temporary folder and are stopped and removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastmcp import Client
from prometheus_client.parser import text_string_to_metric_families

from mcp_server.config import Settings
from mcp_server.runtime import Runtime, start_runtime
from tests.analytics.helpers import analyze, close
from tests.conftest import app_for
from tests.support import call, free_port, serving
from warehouse.generator import generate, make_plan
from warehouse.replica import READING_FROM_PRIMARY

pytestmark = pytest.mark.slow

BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "analytics"
FALLBACK_BOUND = 20  # seconds: the bound for reads to move to the primary
BOUND = 30  # seconds: a wait that never ends fails the test here


def _as_postgres(*command: str | Path) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, command)],
        check=True,
        capture_output=True,
        timeout=120,
    )


class Server:
    """One PostgreSQL 15 server of the pair: a data folder owned by postgres, a loopback port."""

    def __init__(self, folder: Path, name: str) -> None:
        self.data = folder / name
        self.port = free_port()
        self.log = folder / f"{name}.log"
        self.sockets = folder

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sockets}"
        _as_postgres(
            BIN / "pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.log, "-o", options
        )

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            _as_postgres(BIN / "pg_ctl", "stop", "-w", "-m", mode, "-D", self.data)


class StreamingPair:
    """A primary made with initdb and its streaming replica made with pg_basebackup -R -X stream."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="amcp-replica-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.primary = Server(self.folder, "primary")
        self.replica = Server(self.folder, "replica")

    def start(self) -> None:
        # initdb's pg_hba.conf with --auth=trust allows replication connections from loopback.
        _as_postgres(
            BIN / "initdb",
            "-D",
            self.primary.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.primary.start()
        subprocess.run(
            [BIN / "createdb", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres", DATABASE],
            check=True,
            capture_output=True,
        )
        _as_postgres(
            BIN / "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            self.replica.data,
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",  # not a spread checkpoint: minutes on an idle primary
            "--no-sync",
        )
        self.replica.start()

    def close(self) -> None:
        for server in (self.replica, self.primary):
            with contextlib.suppress(Exception):
                server.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def pair() -> Any:
    if os.geteuid() != 0 or not (BIN / "pg_basebackup").exists():
        pytest.skip("needs root (to run PostgreSQL 15 as the postgres user) and its binaries")
    streaming = StreamingPair()
    try:
        streaming.start()
        yield streaming
    finally:
        streaming.close()


async def _on(url: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


async def _replica_caught_up(pair: StreamingPair) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    target = await _on(pair.primary.url(), "SELECT pg_current_wal_lsn()::text")
    async with asyncio.timeout(BOUND):
        while not await _on(
            pair.replica.url(), "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", target
        ):
            await asyncio.sleep(0.05)


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = BOUND) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def replica_runtime(pair: StreamingPair, base_settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime on the pair's primary with DATABASE_READ_URL at its replica, holding 200 customers
    (loaded through the runtime, so on the primary, and replayed by the replica)."""
    settings = base_settings.with_changes(
        database_url=pair.primary.url(), database_read_url=pair.replica.url()
    )
    # Its schema and query role are new on the primary: the start waits until the replica has them.
    runtime = await start_runtime(settings, seed_demo=False)
    try:
        await runtime.db.replace_data(await asyncio.to_thread(generate, make_plan(200, 3)))
        await _replica_caught_up(pair)
        yield runtime
    finally:
        await runtime.close()


async def _seen_running_on(url: str, client: Client, marker: str) -> bool:
    """Run a query_database call that sleeps, with `marker` as a column name, and say whether the server at
    `url` showed it in pg_stat_activity, under the request's label, while it ran."""
    query = f"SELECT pg_sleep(1.5) AS slept, count(*) AS {marker} FROM customers"
    running = asyncio.create_task(call(client, "query_database", query=query))
    seen = False
    watcher = await asyncpg.connect(url)
    try:
        while not running.done() and not seen:
            seen = bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 "
                    "AND application_name LIKE 'analytics-mcp/%' AND pid <> pg_backend_pid()",
                    f"%{marker}%",
                )
            )
            await asyncio.sleep(0.05)
    finally:
        await watcher.close()
        await running
    return seen


def _lag_gauge(text: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "analytics_mcp_replica_lag_seconds":
                return float(sample.value)
    return None


async def test_queries_and_analyses_read_from_the_replica_its_lag_shows_and_logs_go_to_the_primary(
    pair, base_settings, api_keys
):
    async with replica_runtime(pair, base_settings) as runtime:
        replica, primary = pair.replica.url(), pair.primary.url()
        assert await _on(replica, "SELECT pg_is_in_recovery()")
        async with Client(app_for(runtime, "analyst").mcp) as client:
            assert await _seen_running_on(replica, client, "replica_marker_1")

            # Replay paused: the replica keeps the 200 customers while the primary now holds 300.
            await _on(replica, "SELECT pg_wal_replay_pause()")
            await _until(lambda: _replay_paused(replica))
            await runtime.db.replace_data(await asyncio.to_thread(generate, make_plan(300, 4)))
            assert await _on(primary, "SELECT count(*) FROM customers") == 300
            answer = await call(client, "query_database", query="SELECT count(*) AS n FROM customers")
            assert answer["rows"] == [{"n": 200}]
            churn = (await analyze(client, "churn_rate"))["results"]
            row = await asyncpg.connect(replica)
            try:
                n, k = await row.fetchrow(
                    "SELECT count(*), count(*) FILTER (WHERE is_churned) FROM customers"
                )
            finally:
                await row.close()
            assert (churn["customers"], churn["overall_churn_rate"]) == (200, close(k / n))

            # The lag grows while replay waits: the watch reads it, /health and /metrics show it.
            await _until(lambda: _positive(runtime.db.replica.lag_seconds))
            async with serving(runtime) as url, httpx.AsyncClient() as http:
                health = (await http.get(f"{url}/health")).json()
                scraped = await http.get(f"{url}/metrics", headers={"X-API-Key": api_keys["viewer"]})
            measured = await _on(
                replica, "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
            )
            assert health["status"] == "ok" and health["replica"] == "ok"
            assert 0 < health["replica_lag_seconds"] <= float(measured)
            gauge = _lag_gauge(scraped.text)
            assert gauge is not None and 0 < gauge <= float(measured)

            # Replay resumed: lag back to 0, and the replica answers with the primary's 300 customers.
            await _on(replica, "SELECT pg_wal_replay_resume()")
            await _until(lambda: _zero(runtime.db.replica.lag_seconds))
            answer = await call(client, "query_database", query="SELECT count(*) AS total FROM customers")
            assert answer["rows"] == [{"total": 300}]

        # The query log and the audit trail are written on the primary (the replica is read-only).
        await runtime.services.query_log.flush()
        await runtime.services.auditor.flush()
        logged = await _on(
            primary,
            "SELECT count(*) FROM mcp_internal.query_log WHERE user_id = 'analyst' AND query_text LIKE $1",
            "%replica_marker_1%",
        )
        assert logged == 1
        audited = await _on(primary, "SELECT count(*) FROM mcp_internal.audit_log WHERE user_id = 'analyst'")
        assert audited >= 4


async def _replay_paused(url: str) -> bool:
    return bool(await _on(url, "SELECT pg_get_wal_replay_pause_state() = 'paused'"))


async def _positive(value: float | None) -> bool:
    return value is not None and value > 0


async def _zero(value: float | None) -> bool:
    return value == 0


async def test_a_stopped_replica_sends_reads_to_the_primary_within_20_s_and_they_return_when_it_is_back(
    pair, base_settings, caplog, record_property
):
    caplog.set_level(logging.WARNING, logger="warehouse.replica")
    async with replica_runtime(pair, base_settings) as runtime:
        replica, primary = pair.replica.url(), pair.primary.url()
        async with Client(app_for(runtime, "analyst").mcp) as client:
            assert await _seen_running_on(replica, client, "before_outage")

            pair.replica.stop("immediate")
            stopped, failed = asyncio.get_running_loop().time(), 0
            async with asyncio.timeout(FALLBACK_BOUND):
                while True:  # a read in the moment before the watch notices may fail ("retry shortly")
                    result = await client.call_tool(
                        "query_database",
                        {"query": "SELECT count(*) AS during FROM customers"},
                        raise_on_error=False,
                    )
                    if not result.is_error:
                        break
                    failed += 1
                    await asyncio.sleep(0.2)
            record_property("fallback_seconds", round(asyncio.get_running_loop().time() - stopped, 2))
            record_property("failed_reads_before_fallback", failed)
            assert await _seen_running_on(primary, client, "during_outage")
            churn = (await analyze(client, "churn_rate"))["results"]
            n, k = (
                await _on(primary, "SELECT count(*) FROM customers"),
                await _on(primary, "SELECT count(*) FROM customers WHERE is_churned"),
            )
            assert (churn["customers"], churn["overall_churn_rate"]) == (n, close(k / n))

            async with serving(runtime) as url, httpx.AsyncClient() as http:
                response = await http.get(f"{url}/health")
            health = response.json()
            assert response.status_code == 200 and health["status"] == "degraded"
            assert health["replica"] == READING_FROM_PRIMARY == health["components"]["postgres_read"]
            assert health["replica_lag_seconds"] is None and "does not answer" in health["warnings"][0]
            down = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
            assert len(down) == 1 and "read from the primary" in down[0]

            pair.replica.start()
            started = asyncio.get_running_loop().time()
            await _until(lambda: _replica_up(runtime))
            record_property("return_seconds", round(asyncio.get_running_loop().time() - started, 2))
            assert await _seen_running_on(replica, client, "after_outage")
            assert (await runtime.health())["postgres_read"] == "ok"
    back = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    assert len(back) == 1


async def _replica_up(runtime: Runtime) -> bool:
    return runtime.db.replica is not None and runtime.db.replica.up
