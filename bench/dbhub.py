"""Throughput against DBHub: 20 clients x 30 calls of a parameterised query, against this server and DBHub
(@bytebase/dbhub, read-only execute_sql, streamable HTTP) on the same database, in one run.

The rounds interleave (ours, DBHub, ours, DBHub, ...: each round is every client making `--calls /
--rounds` calls at once), so a change in the machine's load falls on both. Each call binds a new value
(`location <> nonce`), so neither server can answer from a cache; DBHub's execute_sql takes no bound
parameters, so it gets the same statement with the values written in. Connections are opened before the
clock starts. Prints calls/s of each, the ratio (target: ours >= DBHub's), p50/p95, and CPU per call of
each server and of the PostgreSQL backends. A third server takes part in every round: bare FastMCP (one
tool that echoes its argument, nothing of ours, no database), the ceiling of any server built on FastMCP
with this client on this machine.

DBHub is installed with `npm install @bytebase/dbhub` into ~/.cache/amcp-bench/dbhub (outside the repo;
XDG_CACHE_HOME moves it) on the first run; without node/npm or the package the bench says so in one line
and exits 1.

Usage: python bench/dbhub.py [--clients 20] [--calls 30] [--rounds 3] [--customers 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.common import free_port, percentile, wait_for_port  # noqa: E402

OURS = (
    "SELECT account_type, count(*) AS customers, avg(age) AS mean_age FROM customers "
    "WHERE age >= %(min_age)s AND location <> %(nonce)s GROUP BY account_type ORDER BY 1"
)
THEIRS = (
    "SELECT account_type, count(*) AS customers, avg(age) AS mean_age FROM customers "
    "WHERE age >= {min_age} AND location <> '{nonce}' GROUP BY account_type ORDER BY 1"
)
PACKAGE = "@bytebase/dbhub"


def dbhub_entry() -> Path:
    """DBHub's entry script, installed with npm into the cache on first use; SystemExit(1) if impossible."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amcp-bench" / "dbhub"
    entry = cache / "node_modules" / "@bytebase" / "dbhub" / "dist" / "index.js"
    if entry.exists():
        return entry
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        print("DBHub: node and npm are needed to install @bytebase/dbhub and are not on PATH: no comparison")
        raise SystemExit(1)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0 or not entry.exists():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] if done else ["timed out after 600 s"]
        print(f"DBHub: npm could not install {PACKAGE} ({' '.join(last)[:200]}): no comparison")
        raise SystemExit(1)
    return entry


def dbhub_version(entry: Path) -> str:
    import json

    return str(json.loads((entry.parent.parent / "package.json").read_text())["version"])


def node_version(node: str) -> str:
    return subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def start_dbhub(node: str, entry: Path, port: int, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """DBHub over streamable HTTP with `config` (its TOML: the source and a read-only execute_sql)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [node, str(entry), "--transport", "http", "--port", str(port), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    wait_for_port(port, process)
    return process


@asynccontextmanager
async def connect(url: str, key: str | None) -> AsyncIterator[Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"X-API-Key": key} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                yield session


class Target:
    """One server under test: how to call it, and what it has measured so far."""

    def __init__(self, name: str, url: str, pids: list[int], keys: list[str | None], kind: str) -> None:
        self.name, self.url, self.pids, self.keys, self.kind = name, url, pids, keys, kind
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.seconds = 0.0
        self.cpu = {"server": 0.0, "PostgreSQL backends": 0.0, "client": 0.0}

    def call(self, client: int, step: int, tag: str) -> tuple[str, dict[str, Any]]:
        min_age, nonce = 18 + (client + step) % 40, f"{tag}-{client}-{step}"
        if self.kind == "ours":
            return "query_database", {"query": OURS, "parameters": {"min_age": min_age, "nonce": nonce}}
        if self.kind == "bare":
            return "echo", {"value": min_age}
        return "execute_sql", {"sql": THEIRS.format(min_age=min_age, nonce=nonce)}


async def client(target: Target, number: int, calls: int, tag: str, ready: asyncio.Barrier) -> None:
    try:
        async with connect(target.url, target.keys[number % len(target.keys)]) as session:
            await ready.wait()
            for step in range(calls):
                tool, arguments = target.call(number, step, tag)
                started = time.perf_counter()
                result = await session.call_tool(tool, arguments, read_timeout_seconds=120)
                if result.is_error:
                    target.errors.append(" ".join(getattr(b, "text", "") for b in result.content)[:200])
                else:
                    target.latencies.append(time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 - a benchmark counts failures, whatever they are
        target.errors.append(f"client {number}: {type(error).__name__}: {error}"[:200])


def cpu_of(pids: list[int], database: str) -> tuple[float, float]:
    def used(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    server = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        server += used(process) + sum(used(child) for child in process.children(recursive=True))
    backends = sum(
        used(process)
        for process in psutil.process_iter(["cmdline"])
        if f" {database} " in " ".join(process.info["cmdline"] or []) + " "
    )
    return server, backends


async def one_round(target: Target, clients: int, calls: int, database: str) -> None:
    tag = uuid.uuid4().hex[:8]
    ready = asyncio.Barrier(clients + 1)
    tasks = [asyncio.create_task(client(target, n, calls, tag, ready)) for n in range(clients)]
    await ready.wait()  # every client connected: the clock starts
    server_before, backends_before = cpu_of(target.pids, database)
    started, client_before = time.monotonic(), time.process_time()
    await asyncio.gather(*tasks)
    target.seconds += time.monotonic() - started
    target.cpu["client"] += time.process_time() - client_before
    server_after, backends_after = cpu_of(target.pids, database)
    target.cpu["server"] += server_after - server_before
    target.cpu["PostgreSQL backends"] += backends_after - backends_before


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=30, help="per client, over all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--customers", type=int, default=5_000)
    args = parser.parse_args()
    entry = dbhub_entry()
    node = shutil.which("node") or "node"

    import redis.asyncio as aioredis
    from cryptography.fernet import Fernet

    from bench.common import redis_url_for_bench, seeded_database
    from bench.load import start_bare
    from mcp_server.config import digest_key
    from tests.production.services import ServerProcess

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, node "
        f"{node_version(node)}, DBHub "
        f"{dbhub_version(entry)}; load average {os.getloadavg()[0]:.1f} at the start; {args.customers:,} customers"
    )
    keys = ["amcp_bench_" + secrets.token_urlsafe(16) for _ in range(args.clients)]
    prefix = f"amcp-bench-{uuid.uuid4().hex[:8]}:"
    redis_url = redis_url_for_bench()
    work = Path(tempfile.mkdtemp(prefix="amcp-dbhub-"))
    async with seeded_database(args.customers) as database_url:
        env = {
            "DATABASE_URL": database_url,
            # One user per client, as 20 people would be (the per-key connection share stays at its default).
            "API_KEYS": ",".join(f"client{n}:analyst:{digest_key(key)}" for n, key in enumerate(keys)),
            "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "REDIS_KEY_PREFIX": prefix,
            "ANALYTICS_MCP_HOME": str(work / "home"),
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "QUERY_SECONDS_PER_MINUTE": "1000000",
            "LOG_LEVEL": "WARNING",
            "FASTMCP_STATELESS_HTTP": "true",
            "FASTMCP_JSON_RESPONSE": os.environ.get("FASTMCP_JSON_RESPONSE", "false"),
        }
        if redis_url:
            env["REDIS_URL"] = redis_url
        ours_server = ServerProcess(env)
        dsn = urlunsplit(urlsplit(database_url)._replace(query="sslmode=disable"))
        config = work / "dbhub.toml"
        config.write_text(
            f'[[sources]]\nid = "default"\ndsn = "{dsn}"\n\n'
            '[[tools]]\nname = "execute_sql"\nsource = "default"\nreadonly = true\n'
        )
        port = free_port()
        theirs_process = bare_process = None
        database = urlsplit(database_url).path.lstrip("/")
        try:
            await ours_server.start()
            theirs_process = start_dbhub(node, entry, port, config, work / "dbhub.log")
            assert ours_server.process is not None
            bare_process, bare_url = start_bare()
            ours = Target("analytics-mcp", ours_server.url, [ours_server.process.pid], list(keys), "ours")
            theirs = Target(
                f"DBHub {dbhub_version(entry)}",
                f"http://127.0.0.1:{port}",
                [theirs_process.pid],
                [None],
                "dbhub",
            )
            bare = Target("bare FastMCP (echo)", bare_url, [bare_process.pid], [None], "bare")
            # Same answer from both (and both warm) before anything is timed.
            answers = []
            for target in (ours, theirs, bare):
                async with connect(target.url, target.keys[0]) as session:
                    for step in range(5):
                        tool, arguments = target.call(0, step, "warm")
                        result = await session.call_tool(tool, arguments, read_timeout_seconds=120)
                        if result.is_error:
                            raise SystemExit(f"{target.name} refused the warm-up query: {result.content[0]}")
                    answers.append(str(result.content[0].text))
            print(
                f"warm-up answers (the last of 5):\n  ours:  {answers[0][:160]!r}\n  DBHub: {answers[1][:160]!r}"
            )
            per_round = max(1, args.calls // args.rounds)
            loads = []
            for _ in range(args.rounds):
                for target in (ours, theirs, bare):
                    loads.append(os.getloadavg()[0])
                    await one_round(target, args.clients, per_round, database)
        finally:
            for process in (theirs_process, bare_process):
                if process is not None:
                    process.terminate()
                    process.wait(20)
            await ours_server.stop()
            if redis_url:
                redis = aioredis.from_url(redis_url)
                async for item in redis.scan_iter(match=prefix + "*", count=1000):
                    await redis.delete(item)
                await redis.aclose()
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{args.clients} clients x {per_round * args.rounds} calls each, {args.rounds} interleaved rounds "
        f"(load average {min(loads):.1f}-{max(loads):.1f} at the rounds' starts)"
    )
    print(
        f"  {'server':<22}{'calls':>7}{'errors':>8}{'calls/s':>9}{'p50 ms':>8}{'p95 ms':>8}{'server CPU ms/call':>20}{'PG ms/call':>12}{'client ms/call':>16}"
    )
    rates = {}
    for target in (ours, theirs, bare):
        calls = len(target.latencies)
        rates[target.name] = calls / target.seconds if target.seconds else 0.0
        print(
            f"  {target.name:<22}{calls:>7}{len(target.errors):>8}{rates[target.name]:>9.1f}"
            f"{statistics.median(target.latencies) * 1000 if calls else 0:>8.1f}"
            f"{percentile(target.latencies, 95) * 1000 if calls else 0:>8.1f}"
            f"{target.cpu['server'] / max(calls, 1) * 1000:>20.2f}{target.cpu['PostgreSQL backends'] / max(calls, 1) * 1000:>12.2f}"
            f"{target.cpu['client'] / max(calls, 1) * 1000:>16.2f}"
        )
        if target.errors:
            print(f"    first error: {target.errors[0]}")
    ratio = rates[ours.name] / rates[theirs.name] if rates[theirs.name] else float("inf")
    print(
        f"ratio ours / DBHub: {ratio:.2f}x calls per second; target ours >= DBHub's: "
        f"{'met' if ratio >= 1 else 'NOT met'}"
    )
    ceiling = rates[bare.name] / rates[theirs.name] if rates[theirs.name] else float("inf")
    print(
        f"ratio bare FastMCP / DBHub: {ceiling:.2f}x (the most any FastMCP server could reach here); "
        f"ours / bare FastMCP: {rates[ours.name] / rates[bare.name] if rates[bare.name] else 0:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
