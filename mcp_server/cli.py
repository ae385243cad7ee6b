"""The `analytics-mcp` command: serve, seed (telecom or shop), apikey, rotate-keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from core.errors import AnalyticsError, InvalidInput
from mcp_server import package_version
from mcp_server.config import ROLES, ConfigError, Settings, digest_key, parse_api_keys
from mcp_server.logs import configure_logging
from warehouse.sources import SourceConfigError

if TYPE_CHECKING:
    from warehouse.generator import GenerationPlan

log = logging.getLogger("analytics_mcp")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one clear line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _whole_number(low: int, high: int | None = None) -> Any:
    """An argparse type: a whole number from `low` (to `high`), refused in one line otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


# Listen addresses that name no URL a client can use (compared with --host, never bound here).
WILDCARDS = ("0.0.0.0", "::")  # noqa: S104

_EPILOG = "Settings come from the environment (DATABASE_URL, REDIS_URL, API_KEYS, ...): see .env.example."


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="analytics-mcp",
        description="An MCP server for safe, statistically sound analysis of a team's data.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=ArgumentParser, metavar="COMMAND"
    )

    def command(name: str, help_text: str) -> ArgumentParser:
        sub: ArgumentParser = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        return sub

    serve = command("serve", "serve MCP over streamable HTTP or stdio")
    serve.add_argument(
        "--transport",
        choices=["http", "stdio"],
        default="http",
        help="http: streamable HTTP for remote clients; stdio: one local client that starts the server",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (http only)")
    serve.add_argument(
        "--port", type=_whole_number(1, 65535), default=8000, help="port to listen on (http only)"
    )

    seed = command("seed", "create the schema and load deterministic synthetic data")
    seed.add_argument(
        "--dataset",
        choices=["telecom", "shop"],
        default="telecom",
        help="telecom: the built-in demo tables; shop: the e-commerce demo in a source (schema shop, "
        "the MySQL database, or <table>.parquet files)",
    )
    seed.add_argument(
        "--source",
        default="main",
        help="the source to load (its write_url); telecom: main, a MySQL/MariaDB or a files source",
    )
    seed.add_argument(
        "--customers",
        type=_whole_number(1),
        help="number of customers to make (required for telecom; shop: 20000)",
    )
    seed.add_argument(
        "--seed",
        type=_whole_number(0),
        help="random seed: the same seed, the same data (required for telecom; shop: 42)",
    )
    seed.add_argument("--start-date", default="2024-01-01", help="first day of the data, YYYY-MM-DD")
    seed.add_argument("--end-date", default="2025-12-31", help="last day of the data, YYYY-MM-DD")
    seed.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    apikey = command("apikey", "make a new API key and its API_KEYS entry")
    apikey.add_argument("--user", required=True, help="user id: 1-64 letters, digits or _.@-")
    apikey.add_argument("--role", choices=list(ROLES), required=True, help="what the key may do")

    command(
        "rotate-keys", "re-encrypt every live and archived session under the first SESSION_ENCRYPTION_KEY"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "apikey":
        return _apikey(parser, args.user, args.role)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"analytics-mcp: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if args.command == "seed":
            return asyncio.run(_seed_command(parser, settings, args))
        if args.command == "rotate-keys":
            return asyncio.run(_rotate_keys(settings))
        return _serve(settings, args)
    except (ConfigError, SourceConfigError) as error:
        print(f"analytics-mcp: configuration error: {error}", file=sys.stderr)
        return 2
    except AnalyticsError as error:
        print(f"analytics-mcp: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _apikey(parser: ArgumentParser, user: str, role: str) -> int:
    key = "amcp_" + secrets.token_urlsafe(32)
    entry = f"{user}:{role}:{digest_key(key)}"
    try:
        parse_api_keys(entry)
    except ConfigError as error:
        parser.error(str(error).replace("API_KEYS entry 1", "--user"))
    print(f"key:      {key}")
    print(f"API_KEYS: {entry}")
    print("Add the API_KEYS entry to the server's API_KEYS (comma separated); give the key to the client.")
    return 0


async def _seed_command(parser: ArgumentParser, settings: Settings, args: argparse.Namespace) -> int:
    from warehouse.generator import generate, make_plan

    if args.dataset == "shop":
        return await _seed_shop(parser, settings, args)
    if args.customers is None or args.seed is None:
        parser.error("the following arguments are required for the telecom dataset: --customers, --seed")
    try:
        plan = make_plan(args.customers, args.seed, args.start_date, args.end_date)
    except InvalidInput as error:
        parser.error(str(error))
    if args.source != "main":
        return await _seed_telecom_source(settings, args.source, plan, args.no_progress)
    from core.embedded import EmbeddedServices
    from warehouse.db import Database

    embedded = EmbeddedServices(settings.home) if settings.database_url is None else None
    if embedded is not None:
        url = await asyncio.to_thread(embedded.start_postgres)
    else:
        assert settings.database_url is not None
        url = settings.database_url
    db = Database(url, query_url=settings.database_query_url, min_size=1, max_size=2)
    try:
        await db.start()
        await db.apply_schema()
        data = await asyncio.to_thread(generate, plan)
        with _progress_bar("seeding", args.no_progress) as progress:
            report = await db.replace_data(data, progress=progress)
        # Caches key on mcp_internal.data_version, which the load bumped: nothing stale is served.
        print(
            f"loaded {report.customers:,} customers, {report.network_events:,} network events, "
            f"{report.revenue:,} revenue rows in {report.seconds:.1f}s "
            f"({report.rows / max(report.seconds, 1e-9):,.0f} rows/s); seed {plan.seed}, "
            f"{plan.start_date} to {plan.end_date}"
        )
    finally:
        await db.close()
        if embedded is not None:
            embedded.stop()
    return 0


async def _seed_telecom_source(settings: Settings, name: str, plan: GenerationPlan, no_progress: bool) -> int:
    """The telecom tables into a MySQL/MariaDB or files source (its write_url): the rows main would hold."""
    from mcp_server.datasets import check_telecom_source
    from warehouse.generator import generate
    from warehouse.sources import load_sources
    from warehouse.telecom_store import load_telecom

    sources = load_sources(settings.sources_path, settings.sources_env, main_url=settings.database_url)
    source = sources.get(name)
    check_telecom_source(source)
    started = time.perf_counter()
    data = await asyncio.to_thread(generate, plan)
    with _progress_bar("seeding telecom", no_progress) as progress:
        counts = await load_telecom(source, data, progress=progress, plan=plan)
    seconds, rows = time.perf_counter() - started, sum(counts.values())
    print(
        f"loaded {counts['customers']:,} customers, {counts['network_events']:,} network events, "
        f"{counts['revenue']:,} revenue rows into source '{source.name}' in {seconds:.1f}s "
        f"({rows / max(seconds, 1e-9):,.0f} rows/s); seed {plan.seed}, {plan.start_date} to {plan.end_date}"
    )
    return 0


async def _seed_shop(parser: ArgumentParser, settings: Settings, args: argparse.Namespace) -> int:
    from warehouse.shop import DEFAULT_CUSTOMERS, DEFAULT_SEED, shop_plan
    from warehouse.shop_store import load_shop
    from warehouse.sources import MAIN, load_sources

    try:
        plan = shop_plan(
            DEFAULT_CUSTOMERS if args.customers is None else args.customers,
            DEFAULT_SEED if args.seed is None else args.seed,
            args.start_date,
            args.end_date,
        )
    except InvalidInput as error:
        parser.error(str(error))
    from core.embedded import EmbeddedServices

    main_url = settings.database_url
    embedded = EmbeddedServices(settings.home) if args.source == MAIN and main_url is None else None
    if embedded is not None:
        main_url = await asyncio.to_thread(embedded.start_postgres)
    try:
        source = load_sources(settings.sources_path, settings.sources_env, main_url=main_url).get(args.source)
        with _progress_bar("seeding shop", args.no_progress) as progress:
            report = await load_shop(source, plan, progress=progress)
        print(
            f"loaded {report.counts['customers']:,} customers, {report.counts['orders']:,} orders, "
            f"{report.rows:,} rows in all into source '{source.name}' in {report.seconds:.1f}s "
            f"({report.rows / max(report.seconds, 1e-9):,.0f} rows/s); seed {plan.seed}, "
            f"{plan.start_date} to {plan.end_date}"
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


@contextlib.contextmanager
def _progress_bar(label: str, off: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback (stage, done, total) drawing a bar on stderr, unless `off`."""
    from tqdm import tqdm

    with tqdm(total=1, unit="row", unit_scale=True, desc=label, file=sys.stderr, disable=off) as bar:

        def progress(stage: str, done: int, total: int) -> None:
            bar.total = total
            bar.set_postfix_str(stage)
            bar.update(done - bar.n)

        yield progress


async def _rotate_keys(settings: Settings) -> int:
    """Run after putting a new key first in SESSION_ENCRYPTION_KEY; then the old keys can be removed."""
    from mcp_server.runtime import start_runtime
    from sessions.rotation import rotate_keys

    runtime = await start_runtime(settings, seed_demo=False)
    try:
        counts = await rotate_keys(runtime.services.session_store)
    finally:
        await runtime.close()
    print(json.dumps(counts))
    if counts["unreadable"]:
        print(
            f"analytics-mcp: {counts['unreadable']} session(s) could not be decrypted with any configured key "
            "and were left as they are",
            file=sys.stderr,
        )
        return 1
    return 0


def client_config(url: str, key: str) -> str:
    """Ready-to-paste MCP client configuration for this server, each snippet saying which client it is for."""
    servers = {"mcpServers": {"analytics-mcp": {"type": "http", "url": url, "headers": {"X-API-Key": key}}}}
    vscode = {"servers": {"analytics-mcp": {"type": "http", "url": url, "headers": {"X-API-Key": key}}}}
    return "\n".join(
        [
            "Claude Code, Cursor and other clients reading an mcpServers file (.mcp.json, ~/.cursor/mcp.json):",
            json.dumps(servers, indent=2),
            "VS Code (.vscode/mcp.json):",
            json.dumps(vscode, indent=2),
            f"Claude Code from the shell: claude mcp add --transport http analytics-mcp {url} "
            f'--header "X-API-Key: {key}"',
            "Claude Desktop (stdio): see docs/clients.md.",
        ]
    )


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.transport == "stdio" and settings.api_keys and not settings.mcp_api_key:
        raise ConfigError("stdio with API_KEYS set needs MCP_API_KEY to say who the client is")
    return asyncio.run(_serve_async(settings, args))


async def _serve_async(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from mcp_server.http import build_http_app
    from mcp_server.runtime import start_runtime
    from mcp_server.server import build_app

    runtime = await start_runtime(settings)
    try:
        from analytics.parameters import preload

        await asyncio.to_thread(preload)  # before serving: no slow first analysis
        app = build_app(runtime, local_identity=runtime.local_identity)
        # What is loaded by now lives as long as the process: keep it out of the garbage collector, whose
        # full passes over it (300k objects: pandas, scipy...) would stall every call for 0.2-0.8 s.
        gc.freeze()
        if args.transport == "stdio":
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            try:
                await app.mcp.run_stdio_async(show_banner=False)
            except asyncio.CancelledError:
                pass
            return 0
        url = f"http://{args.host}:{args.port}/mcp"
        if runtime.local_key:
            print(
                f"\nanalytics-mcp serving {url}\nlocal admin key (also in {settings.home / 'api-key'}):\n"
                f"  {runtime.local_key}\nMCP client configuration:\n{client_config(url, runtime.local_key)}\n",
                file=sys.stderr,
                flush=True,
            )
        config = uvicorn.Config(
            # With OAuth the RFC 9728 metadata names PUBLIC_BASE_URL, else this address (not a wildcard).
            build_http_app(
                app, base_url=None if args.host in WILDCARDS else f"http://{args.host}:{args.port}"
            ),
            host=args.host,
            port=args.port,
            log_config=None,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=20,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        _stop_on_signals(server)
        await server.serve()
        return 0
    finally:
        await runtime.close()


def _stop_on_signals(server: Any) -> None:
    """First Ctrl-C or SIGTERM drains in-flight calls, a second one stops at once.

    uvicorn's own handling re-raises the signal after serving, which would kill the process
    before the embedded PostgreSQL and Redis are stopped; so the loop handles the signals.
    """
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    server.capture_signals = contextlib.nullcontext


if __name__ == "__main__":
    sys.exit(main())
