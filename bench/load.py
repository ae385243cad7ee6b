"""Load: N concurrent agents over streamable HTTP against an `analytics-mcp serve` process on this machine.

Each agent opens an MCP connection and an analytics session, then loops a mixed script (query,
analyse, chart, session write and read) until the time is up. Prints p50/p95/p99 per tool, calls per
second and every error; the baseline is the same script run by ONE agent alone, measured first in the
same run, so the ratio shows what concurrency costs. Target: zero errors, p95 < 1 s for non-chart calls.
It also prints where the machine's CPU went during the load (load generator, server, chart workers,
everything else), since on a small machine the 100 simulated clients compete with the server for cores.

Usage: python bench/load.py [--agents 100] [--seconds 60] [--customers 5000] [--baseline-seconds 10]
                            [--think-seconds 0]
--think-seconds pauses each agent between calls, as an LLM does while it reads a result (0: back to back).
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable (a scratch database and a random
key prefix, removed afterwards), else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import sys
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from bench.common import redis_url_for_bench, scratch_database  # noqa: E402
from mcp_server.config import digest_key  # noqa: E402
from tests.production.services import ServerProcess  # noqa: E402
from warehouse.db import Database  # noqa: E402
from warehouse.generator import generate, make_plan  # noqa: E402

WANTED = [
    "session_create",
    "query_database",
    "analyze_data",
    "create_visualization",
    "session_update",
    "session_read",
]
CHART_TOOLS = {"create_visualization"}


class Recorder:
    def __init__(self, think_seconds: float = 0.0) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.think_seconds = think_seconds

    async def timed(self, session: Any, tool: str, arguments: dict[str, Any]) -> Any:
        if self.think_seconds:
            await asyncio.sleep(self.think_seconds)
        started = time.perf_counter()
        try:
            result = await session.call_tool(tool, arguments, read_timeout_seconds=120)
        except Exception as error:  # noqa: BLE001 - a benchmark counts failures, whatever they are
            self.errors[tool].append(f"{type(error).__name__}: {error}"[:200])
            return None
        self.latencies[tool].append(time.perf_counter() - started)
        if result.is_error:
            self.errors[tool].append(" ".join(getattr(b, "text", "") for b in result.content)[:200])
            return None
        return result.structured_content


@asynccontextmanager
async def connect(url: str, key: str) -> Any:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=120) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                yield session


async def agent(number: int, url: str, key: str, deadline: float, tools: set[str], rec: Recorder) -> None:
    try:
        async with connect(url, key) as session:
            await session.list_tools()  # what a real client does first (and caches output schemas)
            session_id = None
            if "session_create" in tools:
                created = await rec.timed(session, "session_create", {"data_source": "database"})
                session_id = created and created["session_id"]
            step = 0
            while step == 0 or time.monotonic() < deadline:  # every agent runs the script at least once
                step += 1
                if "query_database" in tools:
                    await rec.timed(
                        session,
                        "query_database",
                        {
                            "query": "SELECT account_type, count(*) AS customers, avg(age) AS mean_age "
                            "FROM customers WHERE age >= %(min_age)s GROUP BY account_type ORDER BY 1",
                            "parameters": {"min_age": 18 + (number + step) % 40},
                        },
                    )
                if "analyze_data" in tools:
                    kind = ("churn_rate", "arpu", "network_quality")[(number + step) % 3]
                    await rec.timed(
                        session, "analyze_data", {"data_source": "database", "analysis_type": kind}
                    )
                if "create_visualization" in tools:
                    await rec.timed(
                        session,
                        "create_visualization",
                        {
                            "data": {
                                "segment": ["Basic", "Premium", "Enterprise"],
                                "churn": [0.3, 0.2, 0.1 + step % 5 / 100],
                            },
                            "chart_type": "bar",
                            "format": "png",
                        },
                    )
                if session_id and "session_update" in tools:
                    await rec.timed(
                        session,
                        "session_update",
                        {"session_id": session_id, "key": "notes", "value": {"agent": number, "step": step}},
                    )
                if session_id and "session_read" in tools:
                    await rec.timed(session, "session_read", {"session_id": session_id, "key": "notes"})
                if not tools & set(WANTED):
                    await rec.timed(session, "summary_snapshot", {})
    except Exception as error:  # noqa: BLE001
        rec.errors["connection"].append(f"agent {number}: {type(error).__name__}: {error}"[:200])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def run(
    url: str, key: str, agents: int, seconds: float, tools: set[str], think_seconds: float = 0.0
) -> tuple[Recorder, float]:
    rec = Recorder(think_seconds)
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(agent(n, url, key, deadline, tools, rec) for n in range(agents)))
    return rec, time.monotonic() - started


def cpu_seconds(server_pid: int, database: str) -> dict[str, float]:
    """CPU seconds used so far by this process (the agents), the server, its chart workers, the PostgreSQL
    backends serving the benchmark's database (their process title names it), and the whole machine."""

    def used(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    server = psutil.Process(server_pid)
    backends = [
        process
        for process in psutil.process_iter(["cmdline"])
        if f" {database} " in " ".join(process.info["cmdline"] or []) + " "
    ]
    machine = psutil.cpu_times()
    return {
        "load generator (the agents, this process)": used(psutil.Process()),
        "server process": used(server),
        "chart worker processes": sum(used(child) for child in server.children(recursive=True)),
        "PostgreSQL backends of the benchmark database": sum(used(backend) for backend in backends),
        "machine": machine.user + machine.system + getattr(machine, "nice", 0.0),
    }


def report_cpu(before: dict[str, float], after: dict[str, float], elapsed: float) -> None:
    spent = {name: after[name] - before[name] for name in before}
    machine = spent.pop("machine")
    ours = sum(spent.values())
    spent["everything else (Redis, other processes on the machine)"] = max(0.0, machine - ours)
    cores = psutil.cpu_count() or 1
    print(
        f"\nCPU during the load: {machine:,.0f} core-seconds of {elapsed * cores:,.0f} available "
        f"({machine / (elapsed * cores):.0%} busy)"
    )
    for name, seconds in spent.items():
        print(f"  {name:<56}{seconds:>8.0f} s  {seconds / max(machine, 1e-9):>5.0%}")
    print(
        f"  {'(the benchmark: agents, server, chart workers, backends)':<56}{ours:>8.0f} s  {ours / max(machine, 1e-9):>5.0%}"
    )


def report(title: str, rec: Recorder, elapsed: float) -> dict[str, float]:
    calls = sum(len(v) for v in rec.latencies.values())
    errors = sum(len(v) for v in rec.errors.values())
    print(f"\n{title}: {calls:,} calls in {elapsed:.1f} s = {calls / elapsed:,.1f} calls/s, {errors} errors")
    print(f"  {'tool':<22}{'calls':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    p50s = {}
    for tool in sorted(rec.latencies):
        values = rec.latencies[tool]
        p50s[tool] = statistics.median(values)
        print(
            f"  {tool:<22}{len(values):>8}{p50s[tool] * 1000:>10.0f}{percentile(values, 95) * 1000:>10.0f}"
            f"{percentile(values, 99) * 1000:>10.0f}{max(values) * 1000:>10.0f}"
        )
    for tool, messages in rec.errors.items():
        print(f"  errors in {tool}: {len(messages)}; first: {messages[0]}")
    return p50s


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--think-seconds", type=float, default=0.0)
    args = parser.parse_args()

    key = "amcp_bench_" + secrets.token_urlsafe(16)
    prefix = f"amcp-bench-{uuid.uuid4().hex[:8]}:"
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"amcp-load-{uuid.uuid4().hex[:8]}"
    redis_url = redis_url_for_bench()
    async with scratch_database() as database_url:
        db = Database(database_url, min_size=1, max_size=2)
        await db.start()
        await db.apply_schema()
        await db.replace_data(await asyncio.to_thread(generate, make_plan(args.customers, 42)))
        await db.close()
        env = {
            "DATABASE_URL": database_url,
            "API_KEYS": f"bench:analyst:{digest_key(key)}",
            "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "REDIS_KEY_PREFIX": prefix,
            "ANALYTICS_MCP_HOME": str(home),
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "LOG_LEVEL": "WARNING",
            "FASTMCP_STATELESS_HTTP": "true",
        }
        if redis_url:
            env["REDIS_URL"] = redis_url
        server = ServerProcess(env)
        await server.start()
        try:
            async with connect(server.url, key) as session:
                available = {tool.name for tool in (await session.list_tools()).tools}
            tools = available & set(WANTED)
            missing = [tool for tool in WANTED if tool not in available]
            print(
                f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                f"load average {os.getloadavg()[0]:.1f}; {args.customers:,} customers"
            )
            print(f"tools exercised: {', '.join(sorted(tools)) or 'summary_snapshot only'}")
            print(f"tools missing: {', '.join(missing) or 'none'}")
            # Warm-up, not recorded: starts the chart worker processes and fills the answer caches once,
            # so the baseline measures a warm server as the load does.
            await run(server.url, key, 2, 0.0, tools)
            baseline, base_elapsed = await run(server.url, key, 1, args.baseline_seconds, tools)
            base_p50 = report("baseline (1 agent alone)", baseline, base_elapsed)
            assert server.process is not None
            database = urlsplit(database_url).path.lstrip("/")
            cpu_before = cpu_seconds(server.process.pid, database)
            loaded, elapsed = await run(server.url, key, args.agents, args.seconds, tools, args.think_seconds)
            cpu_after = cpu_seconds(server.process.pid, database)
            pacing = f", {args.think_seconds:g} s think time" if args.think_seconds else ", back to back"
            load_p50 = report(
                f"load ({args.agents} concurrent agents, {args.seconds:.0f} s{pacing})", loaded, elapsed
            )
            report_cpu(cpu_before, cpu_after, elapsed)
        finally:
            await server.stop()
            if redis_url:
                client = aioredis.from_url(redis_url)
                async for item in client.scan_iter(match=prefix + "*", count=1000):
                    await client.delete(item)
                await client.aclose()
    print("\nratio p50 under load / p50 alone:")
    for tool in sorted(load_p50):
        if tool in base_p50:
            print(f"  {tool:<22}{load_p50[tool] / base_p50[tool]:>8.1f}x")
    slow = [
        tool
        for tool, values in loaded.latencies.items()
        if tool not in CHART_TOOLS and percentile(values, 95) >= 1.0
    ]
    errors = sum(len(v) for v in loaded.errors.values())
    print(
        f"target zero errors: {'met' if errors == 0 else f'NOT met ({errors})'}; "
        f"target p95 < 1 s for non-chart calls: {'met' if not slow else 'NOT met: ' + ', '.join(sorted(slow))}"
    )


if __name__ == "__main__":
    asyncio.run(main())
