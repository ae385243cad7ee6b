"""Load: 100 concurrent agents over streamable HTTP, against one `analytics-mcp serve` instance and against
two behind a round-robin proxy (bench/proxy.py), beside a bare FastMCP server answering the same number of
trivial calls (the MCP stack's own ceiling), in one run.

Each agent is one realistic session on its own MCP connection: session_create, then `--rounds` rounds of
query_database (a GROUP BY with bound parameters, a different value each call: no cache hits),
session_update, session_read (checked: it must return the value just written) and a cached analyze_data,
then session_close (archived). The bare server's agents connect the same way and make as many calls to a
trivial tool. Prints calls/s, errors, p50/p95/p99 per tool, the ratio of each configuration's throughput
to the bare server's, where the CPU went, and (behind the proxy) how many sessions were created on one
instance and read or updated on the other (the proxy alternates each agent's requests between the
instances). Targets (issue 24): 0 errors; p95 <= 1 s per non-chart call
with 100 agents on one instance; throughput >= 50% of the bare server's; every session works from either
instance.

Usage: python bench/load.py [--agents 100] [--rounds 3] [--customers 5000] [--configs 1,2p] [--charts]
                            [--users 25] [--profile PATH]
--configs: which server set-ups to load after the bare server: N = N instances, "p" = behind the proxy
  (one instance without "p" is reached directly), e.g. `--configs 1p,2p,3p` for worker sizing.
--users: the agents share this many API keys (25: 4 agents each, as a key may run 4 queries at once per
  instance, QUERY_MAX_CONCURRENT_PER_KEY; a fifth waits up to 2 s for one, then is refused).
--charts adds a create_visualization to every round (kept out by default: the latency target is for
  non-chart calls). --profile PATH runs instance 1 under cProfile (CPU time) and prints its top functions.
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable (a scratch database and a random
key prefix, removed afterwards), else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.common import free_port, percentile, wait_for_port  # noqa: E402

ANALYSES = ("churn_rate", "arpu", "network_quality")
CHART_TOOLS = {"create_visualization"}
QUERY = (
    "SELECT account_type, count(*) AS customers, avg(age) AS mean_age FROM customers "
    "WHERE age >= %(min_age)s AND location <> %(nonce)s GROUP BY account_type ORDER BY 1"
)
# `analytics-mcp serve` under cProfile counting CPU time, not wall-clock time: on a busy machine a process
# waits for a core inside any call, which a wall-clock profile would blame on that call.
PROFILED_SERVE = (
    "import cProfile, sys, time; from mcp_server.cli import main; "
    "profile = cProfile.Profile(time.process_time); profile.enable(); "
    "code = main(sys.argv[1:]); profile.disable(); profile.dump_stats({path!r}); sys.exit(code)"
)
P95_TARGET = 1.0
BARE_SHARE_TARGET = 0.5


@dataclass
class Recorder:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # agent number -> (tool, upstream index) of each of its calls, from the proxy's X-Served-By header
    served: dict[int, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    http_errors: list[str] = field(default_factory=list)  # the status behind an error counted above

    async def timed(self, session: Any, tool: str, arguments: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await session.call_tool(tool, arguments, read_timeout_seconds=300)
        except Exception as error:  # noqa: BLE001 - a benchmark counts failures, whatever they are
            self.errors[tool].append(f"{type(error).__name__}: {error}"[:200])
            return None
        self.latencies[tool].append(time.perf_counter() - started)
        if result.is_error:
            self.errors[tool].append(" ".join(getattr(b, "text", "") for b in result.content)[:200])
            return None
        return result.structured_content if result.structured_content is not None else {}

    @property
    def calls(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    @property
    def error_count(self) -> int:
        return sum(len(messages) for messages in self.errors.values())


@asynccontextmanager
async def connect(url: str, key: str, rec: Recorder | None = None, number: int = 0) -> AsyncIterator[Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def note_upstream(response: Any) -> None:
        if rec is None:
            return
        if response.status_code >= 400:  # the MCP client reports these without the status: keep it
            await response.aread()
            rec.http_errors.append(f"HTTP {response.status_code}: {response.text[:150]}")
        served = response.headers.get("x-served-by")
        if served is None:
            return
        try:
            message = json.loads(response.request.content)
        except (ValueError, TypeError, RuntimeError):
            return
        if isinstance(message, dict) and message.get("method") == "tools/call":
            rec.served[number].append((message["params"]["name"], int(served)))

    async with httpx2.AsyncClient(
        headers={"X-API-Key": key, "X-Bench-Client": str(number)},
        timeout=300,
        event_hooks={"response": [note_upstream]},
    ) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                yield session


async def analyst(
    number: int, url: str, key: str, rounds: int, charts: bool, tag: str, rec: Recorder
) -> None:
    """One agent's session: create, `rounds` x (query, update, read, cached analysis[, chart]), close."""
    try:
        async with connect(url, key, rec, number) as session:
            await session.list_tools()  # what a real client does first
            created = await rec.timed(session, "session_create", {"data_source": "database"})
            if not created:
                return
            session_id = created["session_id"]
            for step in range(rounds):
                parameters = {"min_age": 18 + (number + step) % 40, "nonce": f"{tag}-{number}-{step}"}
                await rec.timed(session, "query_database", {"query": QUERY, "parameters": parameters})
                note = {"agent": number, "step": step, "run": tag}
                updated = await rec.timed(
                    session, "session_update", {"session_id": session_id, "key": "notes", "value": note}
                )
                read = await rec.timed(session, "session_read", {"session_id": session_id, "key": "notes"})
                if updated is not None and read is not None and read.get("value") != note:
                    rec.errors["session_read"].append(
                        f"agent {number} read {read.get('value')!r}, wrote {note!r}"
                    )
                kind = ANALYSES[(number + step) % len(ANALYSES)]
                await rec.timed(session, "analyze_data", {"data_source": "database", "analysis_type": kind})
                if charts:
                    data = {
                        "segment": ["Basic", "Premium", "Enterprise"],
                        "churn": [0.3, 0.2, 0.1 + step / 100],
                    }
                    await rec.timed(
                        session, "create_visualization", {"data": data, "chart_type": "bar", "format": "png"}
                    )
            await rec.timed(session, "session_close", {"session_id": session_id})
    except Exception as error:  # noqa: BLE001
        rec.errors["connection"].append(f"agent {number}: {type(error).__name__}: {error}"[:200])


async def warm_analyses(url: str, key: str) -> None:
    rec = Recorder()
    async with connect(url, key) as session:
        for kind in ANALYSES:
            await rec.timed(session, "analyze_data", {"data_source": "database", "analysis_type": kind})
    if rec.errors:
        raise RuntimeError(f"warm-up failed: {next(iter(rec.errors.values()))[0]}")


async def trivial(number: int, url: str, calls: int, rec: Recorder) -> None:
    """The bare server's agent: the same connection, then `calls` calls of a tool that does nothing."""
    try:
        async with connect(url, "unused") as session:
            await session.list_tools()
            for step in range(calls):
                await rec.timed(session, "echo", {"value": number * 1000 + step})
    except Exception as error:  # noqa: BLE001
        rec.errors["connection"].append(f"agent {number}: {type(error).__name__}: {error}"[:200])


def calls_per_agent(rounds: int, charts: bool) -> int:
    return 2 + rounds * (5 if charts else 4)


# -- where the CPU went ---------------------------------------------------------------------------------


def _used(process: psutil.Process, children: bool = False) -> float:
    try:
        members = [process, *process.children(recursive=True)] if children else [process]
        return float(sum(member.cpu_times().user + member.cpu_times().system for member in members))
    except psutil.Error:
        return 0.0


def cpu_seconds(groups: dict[str, list[int]], database: str) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes (children included: chart workers), the
    PostgreSQL backends of the bench database (their title names it), Redis and the whole machine."""
    backends, redis = [], []
    for process in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(process.info["cmdline"] or []) + " "
        if f" {database} " in title:
            backends.append(process)
        elif (process.info["name"] or "").startswith("redis-server"):
            redis.append(process)
    spent = {
        name: sum(_used(psutil.Process(pid), children=True) for pid in pids) for name, pids in groups.items()
    }
    spent["PostgreSQL backends of the bench database"] = sum(_used(backend) for backend in backends)
    spent["Redis (shared with other work on the machine)"] = sum(_used(server) for server in redis)
    machine = psutil.cpu_times()
    spent["machine"] = machine.user + machine.system + getattr(machine, "nice", 0.0)
    return spent


def report_cpu(
    before: dict[str, float], after: dict[str, float], elapsed: float, calls: int
) -> dict[str, float]:
    spent = {name: after[name] - before[name] for name in before}
    machine = spent.pop("machine")
    spent["everything else (other processes on the machine)"] = max(0.0, machine - sum(spent.values()))
    cores = psutil.cpu_count() or 1
    print(
        f"  CPU: {machine:,.1f} core-seconds of {elapsed * cores:,.1f} available ({machine / (elapsed * cores):.0%} busy);"
        f" per call {machine / max(calls, 1) * 1000:.1f} ms"
    )
    for name, seconds in spent.items():
        print(
            f"    {name:<52}{seconds:>8.1f} s {seconds / max(machine, 1e-9):>5.0%}"
            f"{seconds / max(calls, 1) * 1000:>8.2f} ms/call"
        )
    return spent


def report(title: str, rec: Recorder, elapsed: float, load: float) -> float:
    rate = rec.calls / elapsed
    print(
        f"\n{title} (load average {load:.1f} at its start): {rec.calls:,} calls in {elapsed:.1f} s = "
        f"{rate:,.1f} calls/s, {rec.error_count} errors"
    )
    print(f"  {'tool':<22}{'calls':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for tool in sorted(rec.latencies):
        values = rec.latencies[tool]
        print(
            f"  {tool:<22}{len(values):>8}{statistics.median(values) * 1000:>10.0f}"
            f"{percentile(values, 95) * 1000:>10.0f}{percentile(values, 99) * 1000:>10.0f}{max(values) * 1000:>10.0f}"
        )
    for tool, messages in rec.errors.items():
        print(f"  errors in {tool}: {len(messages)}; first: {messages[0]}")
    if rec.http_errors:
        print(f"  HTTP errors behind them: {len(rec.http_errors)}; first: {rec.http_errors[0]}")
    return rate


def worst_p95(rec: Recorder) -> tuple[str, float]:
    p95s = {tool: percentile(values, 95) for tool, values in rec.latencies.items() if tool not in CHART_TOOLS}
    tool = max(p95s, key=lambda name: p95s[name])
    return tool, p95s[tool]


def crossed_sessions(rec: Recorder) -> tuple[int, int]:
    """(sessions whose update or read was answered by another instance than their create, sessions)."""
    crossed = total = 0
    for calls in rec.served.values():
        created = [upstream for tool, upstream in calls if tool == "session_create"]
        if not created:
            continue
        total += 1
        later = {upstream for tool, upstream in calls if tool in ("session_update", "session_read")}
        crossed += bool(later - {created[0]})
    return crossed, total


# -- the servers ----------------------------------------------------------------------------------------


def serve_bare(port: int) -> None:
    """The MCP stack alone: FastMCP over streamable HTTP (stateless, as the bench's instances) with one tool."""
    import uvicorn
    from fastmcp import FastMCP

    bare = FastMCP("bare")

    @bare.tool
    async def echo(value: int) -> dict[str, int]:
        """Answer the value."""
        return {"value": value}

    app = bare.http_app(path="/mcp", stateless_http=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, log_level="warning", lifespan="on")


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    """`serve_bare` in its own process on a free port, once it listens: (process, url)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)],
        stdin=subprocess.DEVNULL,
        env={**os.environ, "FASTMCP_SHOW_SERVER_BANNER": "false"},
    )
    wait_for_port(port, process)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Config:
    instances: int
    proxy: bool

    @classmethod
    def parse(cls, text: str) -> Config:
        proxy = text.endswith("p")
        instances = int(text.rstrip("p"))
        if instances < 1 or (instances > 1 and not proxy):
            raise SystemExit(f"config {text!r}: write N for one instance direct or Np for N behind the proxy")
        return cls(instances, proxy)

    @property
    def title(self) -> str:
        noun = "instance" if self.instances == 1 else "instances"
        return f"{self.instances} {noun}" + (" behind the proxy" if self.proxy else ", direct")


async def run_agents(agents: list[Any]) -> float:
    started = time.monotonic()
    await asyncio.gather(*agents)
    return time.monotonic() - started


def print_profile(path: Path) -> None:
    import pstats

    print("\nprofile of instance 1 (cProfile, CPU time, whole life of the process, start-up included):")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(20)
    print("our own code, by cumulative CPU time:")
    stats.sort_stats("cumulative").print_stats(r"/(mcp_server|sessions|warehouse|analytics|core)/", 30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--configs", default="1,2p")
    parser.add_argument(
        "--pool-size",
        type=int,
        help="DB_POOL_MAX_SIZE of each instance; default the server's 20, less beyond two instances so that "
        "instances x 2 pools x size stays within 80 of PostgreSQL's 100 connections here",
    )
    parser.add_argument("--users", type=int, default=25, help="API keys the agents share out")
    parser.add_argument("--charts", action="store_true")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
    else:
        asyncio.run(measure(args))


async def measure(args: argparse.Namespace) -> None:
    configs = [Config.parse(text.strip()) for text in args.configs.split(",") if text.strip()]

    import redis.asyncio as aioredis
    from cryptography.fernet import Fernet

    from bench.common import redis_url_for_bench, seeded_database
    from bench.proxy import start_proxy
    from mcp_server.config import digest_key
    from tests.production.services import ServerProcess

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} before the run; {args.customers:,} customers, {args.agents} agents "
        f"x {calls_per_agent(args.rounds, args.charts)} calls ({args.rounds} rounds{', charts' if args.charts else ''}),"
        f" {args.users} users"
    )
    keys = ["amcp_bench_" + secrets.token_urlsafe(16) for _ in range(args.users)]
    prefix = f"amcp-bench-{uuid.uuid4().hex[:8]}:"
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"amcp-load-{uuid.uuid4().hex[:8]}"
    redis_url = redis_url_for_bench()
    per_agent = calls_per_agent(args.rounds, args.charts)
    results: list[tuple[str, Recorder, float, float, float]] = []  # title, recorder, elapsed, rate, load
    server_cpu: dict[str, float] = {}

    # The ceiling first: the bare server, the same agents and the same number of calls.
    bare, url = start_bare()
    try:
        await run_agents([trivial(n, url, 5, Recorder()) for n in range(4)])  # warm-up, not recorded
        rec = Recorder()
        load = os.getloadavg()[0]
        before = cpu_seconds(
            {"load generator (this process: the agents)": [os.getpid()], "bare server": [bare.pid]}, "-"
        )
        elapsed = await run_agents([trivial(n, url, per_agent, rec) for n in range(args.agents)])
        after = cpu_seconds(
            {"load generator (this process: the agents)": [os.getpid()], "bare server": [bare.pid]}, "-"
        )
        rate = report("bare FastMCP server, trivial tool", rec, elapsed, load)
        spent = report_cpu(before, after, elapsed, rec.calls)
        server_cpu["bare"] = spent["bare server"] / max(rec.calls, 1) * 1000
        results.append(("bare FastMCP", rec, elapsed, rate, load))
    finally:
        stop(bare)

    async with seeded_database(args.customers) as database_url:
        env = {
            "DATABASE_URL": database_url,
            "API_KEYS": ",".join(f"agent{n}:analyst:{digest_key(key)}" for n, key in enumerate(keys)),
            "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "REDIS_KEY_PREFIX": prefix,
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "QUERY_SECONDS_PER_MINUTE": "1000000",
            "LOG_LEVEL": "WARNING",
            "FASTMCP_STATELESS_HTTP": "true",
        }
        if redis_url:
            env["REDIS_URL"] = redis_url
        count = max(config.instances for config in configs)
        # Several instances share the machine's PostgreSQL (max_connections 100) with other work.
        env["DB_POOL_MIN_SIZE"] = "2"
        env["DB_POOL_MAX_SIZE"] = str(args.pool_size or min(20, 40 // count))
        print(f"{count} instance(s) started, DB_POOL_MAX_SIZE={env['DB_POOL_MAX_SIZE']} each")
        servers = []
        for number in range(count):
            launcher = None
            if number == 0 and args.profile:
                launcher = ["-c", PROFILED_SERVE.format(path=str(args.profile.resolve()))]
            servers.append(
                ServerProcess({**env, "ANALYTICS_MCP_HOME": str(home / f"instance-{number + 1}")}, launcher)
            )
        database = urlsplit(database_url).path.lstrip("/")
        try:
            await servers[0].start()  # the first creates the schema and the query role
            await asyncio.gather(*(server.start() for server in servers[1:]))
            for server in servers:  # warm each process (imports, first analyses); not recorded
                await analyst(0, server.url, keys[0], 1, args.charts, "warm", Recorder())
            # Cached answers are per user: every user asks each analysis once first, so that every
            # configuration meets the same warm cache (the first one would otherwise pay all the misses).
            await run_agents([warm_analyses(servers[0].url, key) for key in keys])
            for config in configs:
                used = servers[: config.instances]
                proxy = None
                if config.proxy:
                    proxy, url = start_proxy([server.url for server in used])
                else:
                    url = used[0].url
                try:
                    tag = uuid.uuid4().hex[:6]
                    await analyst(1, url, keys[1], 1, args.charts, "warm-" + tag, Recorder())
                    groups = {
                        "load generator (this process: the agents)": [os.getpid()],
                        "server instances (and their chart workers)": [
                            server.process.pid for server in used if server.process is not None
                        ],
                    }
                    if proxy is not None:
                        groups["proxy"] = [proxy.pid]
                    rec = Recorder()
                    load = os.getloadavg()[0]
                    before = cpu_seconds(groups, database)
                    elapsed = await run_agents(
                        [
                            analyst(n, url, keys[n % len(keys)], args.rounds, args.charts, tag, rec)
                            for n in range(args.agents)
                        ]
                    )
                    after = cpu_seconds(groups, database)
                finally:
                    if proxy is not None:
                        stop(proxy)
                rate = report(config.title, rec, elapsed, load)
                spent = report_cpu(before, after, elapsed, rec.calls)
                server_cpu[config.title] = (
                    spent["server instances (and their chart workers)"] / max(rec.calls, 1) * 1000
                )
                if config.instances > 1:
                    crossed, total = crossed_sessions(rec)
                    print(
                        f"  sessions created on one instance and updated or read on another: {crossed} of {total}"
                    )
                results.append((config.title, rec, elapsed, rate, load))
        finally:
            for server in servers:
                await server.stop()
            if redis_url:
                client = aioredis.from_url(redis_url)
                async for item in client.scan_iter(match=prefix + "*", count=1000):
                    await client.delete(item)
                await client.aclose()
            shutil.rmtree(home, ignore_errors=True)
    if args.profile:
        print_profile(args.profile)

    bare_rate = results[0][3]
    print(
        f"\n{'configuration':<34}{'calls/s':>9}{'x bare':>8}{'errors':>8}{'worst p95 (non-chart)':>30}{'load':>6}"
    )
    for title, rec, _elapsed, rate, load in results:
        tool, p95 = worst_p95(rec)
        print(
            f"{title:<34}{rate:>9.1f}{rate / bare_rate:>8.2f}{rec.error_count:>8}"
            f"{f'{tool} {p95 * 1000:,.0f} ms':>30}{load:>6.1f}"
        )
    print("server CPU per call (ms): " + ", ".join(f"{name} {ms:.1f}" for name, ms in server_cpu.items()))
    errors = sum(rec.error_count for _, rec, *_ in results)
    print(f"target 0 errors: {'met' if errors == 0 else f'NOT met ({errors})'}")
    for title, rec, _elapsed, rate, _load in results[1:]:
        tool, p95 = worst_p95(rec)
        share = rate / bare_rate
        verdict = "met" if share >= BARE_SHARE_TARGET else "NOT met"
        line = f"{title}: throughput {share:.0%} of the bare server's (target >= 50%) {verdict}"
        if title.startswith("1 instance"):
            line += f"; p95 per non-chart call <= 1 s {'met' if p95 <= P95_TARGET else f'NOT met ({tool} {p95 * 1000:,.0f} ms)'}"
        print(line)
        if rec.served and not title.startswith("1 "):
            crossed, total = crossed_sessions(rec)
            print(
                f"  sessions served by both instances: {crossed} of {total}, every read returned the last write"
                if not rec.errors.get("session_read")
                else f"  sessions served by both instances: {crossed} of {total}, with read errors"
            )


if __name__ == "__main__":
    main()
