"""Everything a running server holds: settings, the database, Redis, keys, metrics. Built once, passed down."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from core import tracing
from core.embedded import EmbeddedServices, local_admin_key, local_session_key
from core.errors import Unavailable
from mcp_server.auth import Identity, KeyRegistry, OAuthVerifier
from mcp_server.config import ApiKeyEntry, ConfigError, Settings, digest_key
from mcp_server.services import Services, source_pages
from warehouse import sqlguard
from warehouse.db import Database
from warehouse.demo_exports import with_demo_exports
from warehouse.demo_shop import demo_shop_source, seed_demo_shop, with_demo_shop
from warehouse.engines.active import ActiveSources
from warehouse.generator import generate, make_plan
from warehouse.notices import SourceNotices
from warehouse.profiles import Profiler
from warehouse.sources import Registry, Source, load_sources

log = logging.getLogger(__name__)

LOCAL_ADMIN = "local-admin"


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: aioredis.Redis
    keys: KeyRegistry
    encryption_keys: tuple[str, ...]
    local_identity: Identity | None = None
    oauth: OAuthVerifier | None = None  # bearer JWTs beside API keys, when OAUTH_ISSUER is set
    local_key: str | None = None
    embedded: EmbeddedServices | None = None
    cache_redis: aioredis.Redis | None = None  # CACHE_REDIS_URL's; None: answers are cached in `redis`
    tracer_provider: Any = None  # OpenTelemetry's, when OTEL_EXPORTER_OTLP_ENDPOINT is set
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    # The data sources (ANALYTICS_MCP_SOURCES) and their started engines; `main` is `db`.
    sources: ActiveSources = field(default_factory=lambda: ActiveSources(Registry({})))
    # Profiles the sources' tables in the background and on refresh_source (warehouse/profiles.py).
    profiler: Profiler | None = None
    # Tells the other instances of this deployment about source changes and hears theirs (Redis pub/sub).
    notices: SourceNotices | None = None
    # Built with the runtime (a copy made by dataclasses.replace gets its own): stores, limiters, the
    # background writers, caches and the chart pool.
    services: Services = field(init=False)

    def __post_init__(self) -> None:
        self.services = Services.build(self.settings, self.db, self.redis, self.encryption_keys, self.metrics)

    def key(self, *parts: str) -> str:
        """A Redis key under the configured prefix, e.g. key('cache', name) -> '<prefix>cache:{name}'."""
        return self.settings.redis_key_prefix + ":".join(parts)

    async def health(self, timeout: float = 2.0) -> dict[str, str]:
        async def postgres() -> str:
            await self.db.ping(timeout=timeout)
            return "ok"

        async def postgres_read() -> str:
            if self.db.replica is not None:  # probed every few seconds (warehouse/replica.py)
                return self.db.replica.state
            await self.db.ping(timeout=timeout, read=True)
            return "ok"

        async def redis() -> str:
            await asyncio.wait_for(self.redis.ping(), timeout=timeout)
            return "ok"

        checks = [("postgres", postgres), ("redis", redis)]
        if self.db.read_url:  # a read replica (DATABASE_READ_URL) is a dependency of its own
            checks.insert(1, ("postgres_read", postgres_read))
        status: dict[str, str] = {}
        for name, check in checks:
            try:
                status[name] = await asyncio.wait_for(check(), timeout=timeout + 0.5)
            except Exception as error:  # noqa: BLE001 - any failure means "down"
                status[name] = f"down ({type(error).__name__})"
        return status

    async def close(self) -> None:
        # While PostgreSQL and Redis are still open: the background writers write what they hold.
        try:
            await asyncio.wait_for(self.services.close(), timeout=10)
        except Exception as error:  # noqa: BLE001 - shutdown goes on; the writers logged what they lost
            log.warning("closing the services failed (%s)", type(error).__name__)
        if self.tracer_provider is not None:  # after the writers, whose last writes are traced too
            await tracing.stop(self.tracer_provider)
        if self.notices is not None:
            await self.notices.close()
        if self.profiler is not None:
            await self.profiler.close()
        await self.sources.close()
        await self.db.close()
        for client in (self.redis, self.cache_redis):
            try:
                if client is not None:
                    await client.aclose()
            except Exception:  # noqa: BLE001
                log.debug("redis client already closed")
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None


def redis_client(url: str) -> aioredis.Redis:
    # Two quick retries ride over a Redis restart (a pooled connection that died is replaced on the
    # retry, so the caller sees no error) while a dead Redis still fails the call within a second.
    return aioredis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=15,
        retry_on_timeout=False,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), retries=2),
    )


# In a Sentinel failover or a cluster re-shard: each try waits at most 3 s on a socket, three tries with
# a short backoff, so no call waits more than about 10 s before it fails with Redis's one-line error.
_FAILOVER_RETRY = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
)


def session_redis(settings: Settings, url: str | None) -> aioredis.Redis:
    """The session Redis: a cluster (REDIS_CLUSTER_NODES), Sentinel's current master (REDIS_SENTINELS),
    else the one at `url`. The store keeps each session's keys in one hash slot, so all three serve the
    same commands; the cluster client is typed as the plain one for that reason."""
    failover: dict[str, Any] = {
        "password": settings.redis_password,
        "socket_timeout": 3,
        "socket_connect_timeout": 1,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.1), retries=2, supported_errors=_FAILOVER_RETRY),
    }
    if settings.redis_cluster_nodes:
        nodes = [ClusterNode(host, port) for host, port in settings.redis_cluster_nodes]
        return cast(aioredis.Redis, RedisCluster(startup_nodes=nodes, **failover))
    if settings.redis_sentinels:
        sentinel = Sentinel(
            list(settings.redis_sentinels),
            sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1},
            retry_on_error=list(_FAILOVER_RETRY),
            **failover,
        )
        return cast(aioredis.Redis, sentinel.master_for(str(settings.redis_sentinel_master)))
    assert url is not None
    return redis_client(url)


async def start_runtime(settings: Settings, *, seed_demo: bool = True) -> Runtime:
    """Start (or reach) PostgreSQL and Redis, apply the schema, and load demo data into a fresh embedded DB."""
    # A bad sources file stops start-up before anything is started (SourceConfigError, one line).
    load_sources(settings.sources_path, settings.sources_env, main_url="postgresql://127.0.0.1/checking")
    embedded = None
    database_url, redis_url = settings.database_url, settings.redis_url
    # Cluster and Sentinel are reached as configured, never replaced by an embedded Redis.
    embedded_redis = redis_url is None and not (settings.redis_cluster_nodes or settings.redis_sentinels)
    if database_url is None or embedded_redis:
        embedded = EmbeddedServices(settings.home)
    try:
        if database_url is None:
            assert embedded is not None
            database_url = await asyncio.to_thread(embedded.start_postgres)
        if embedded_redis:
            assert embedded is not None
            redis_url = await asyncio.to_thread(embedded.start_redis)

        entries, local_key = settings.api_keys, None
        if not entries:
            local_key, created = local_admin_key(settings.home)
            entries = (ApiKeyEntry(LOCAL_ADMIN, "admin", digest_key(local_key)),)
        keys = KeyRegistry(entries)
        local_identity = keys.resolve(settings.mcp_api_key or local_key)
        if settings.mcp_api_key and local_identity is None:
            raise ConfigError("MCP_API_KEY does not match any entry of API_KEYS")

        encryption_keys = settings.session_encryption_keys
        if not encryption_keys:
            key, created = local_session_key(settings.home)
            if created or settings.database_url:
                log.warning(
                    "SESSION_ENCRYPTION_KEY is not set: using a key kept in the home folder; "
                    "set it (the same on every instance) in production"
                )
            encryption_keys = (key,)

        db = Database(
            database_url,
            read_url=settings.database_read_url,
            query_url=settings.database_query_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            share_per_owner=settings.query_max_concurrent_per_key,
        )
        await db.start()
        runtime = Runtime(
            settings=settings,
            db=db,
            redis=session_redis(settings, redis_url),
            keys=keys,
            encryption_keys=encryption_keys,
            local_identity=local_identity,
            local_key=local_key,
            embedded=embedded,
            cache_redis=redis_client(settings.cache_redis_url) if settings.cache_redis_url else None,
            oauth=OAuthVerifier(settings.oauth) if settings.oauth else None,
        )
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    try:
        runtime.tracer_provider = tracing.start(settings.otel_endpoint)
        await db.apply_schema()
        await db.watch_data_version()  # caches learn data changes from notifications, not a read per call
        # Which functions agent queries may call: this server's built-ins plus QUERY_ALLOWED_FUNCTIONS.
        sqlguard.use_function_policy(
            sqlguard.FunctionPolicy(await db.builtin_functions(), settings.query_allowed_functions)
        )
        try:
            await asyncio.wait_for(runtime.redis.ping(), timeout=5)
        except Exception as error:
            raise Unavailable(
                f"Redis does not answer ({type(error).__name__}); check REDIS_URL, "
                "REDIS_CLUSTER_NODES or REDIS_SENTINELS"
            ) from error
        if not settings.redis_cluster_nodes:  # sessions an older version wrote before hash tags
            if moved := await runtime.services.session_store.move_untagged_sessions():
                log.info("sessions moved to hash-tagged keys", extra={"sessions": moved})
        shop = None
        if seed_demo and settings.database_url is None and settings.sources_path is None:
            shop = await start_demo_shop(db, database_url)
        runtime.sources = await start_sources(settings, database_url, shop=shop)
        runtime.profiler = Profiler(db, runtime.sources)
        runtime.sources.on_started = runtime.profiler.schedule
        runtime.profiler.schedule(runtime.sources.registry.names)  # in the background: never in the way
        runtime.notices = start_notices(runtime)
        if seed_demo and settings.database_url is None and await db.row_count("customers") == 0:
            log.info(
                "loading demo data",
                extra={"customers": settings.demo_customers, "seed": settings.demo_seed},
            )
            data = await asyncio.to_thread(generate, make_plan(settings.demo_customers, settings.demo_seed))
            report = await db.replace_data(data)
            log.info("demo data loaded", extra={"rows": report.rows, "seconds": round(report.seconds, 2)})
    except BaseException:
        await runtime.close()
        raise
    return runtime


async def start_demo_shop(db: Database, database_url: str) -> Source:
    """The demo shop in schema `shop` of the embedded database (loaded when absent) as the source `shop`."""
    loaded = await seed_demo_shop(db, database_url)
    if loaded is not None:
        log.info("demo shop loaded", extra={"rows": loaded.rows, "seconds": round(loaded.seconds, 2)})
    return await demo_shop_source(db, database_url)


async def start_sources(
    settings: Settings, database_url: str, *, shop: Source | None = None
) -> ActiveSources:
    """The registry of ANALYTICS_MCP_SOURCES (a bad entry raises SourceConfigError, one line) with its
    engines started and the file watched; without a file, on the embedded default, the demo `exports`
    (and `shop`, when the caller loaded it: start_demo_shop)."""
    registry = load_sources(settings.sources_path, settings.sources_env, main_url=database_url)
    if settings.sources_path is None and settings.database_url is None:
        registry = await asyncio.to_thread(with_demo_exports, registry, settings.home, settings.demo_seed)
        if shop is not None:
            registry = with_demo_shop(registry, shop)
    sources = await ActiveSources.start(registry, settings.query_allowed_functions)
    if settings.sources_path is not None:
        sources.watch(settings.sources_path, settings.sources_env, interval=settings.sources_poll_seconds)
    return sources


def start_notices(runtime: Runtime) -> SourceNotices:
    """Source notices on `<REDIS_KEY_PREFIX>sources`: a valid sources file edit this instance reads is told to
    the others, which re-read their own file at once; a refreshed source's cached pages are dropped."""
    sources = runtime.sources
    cache = runtime.services.catalog_cache
    announced: set[str] = set()  # digests another instance already told everyone about

    def sources_changed(digest: str | None) -> None:
        if digest is not None:
            announced.clear()
            announced.add(digest)
        if sources.watching and digest != sources.registry.digest:
            sources.recheck()

    def file_changed(registry: Registry) -> None:
        if registry.digest not in announced:  # not the file a notice just made this instance re-read
            notices.send_sources_changed(registry.digest)

    async def profiles_refreshed(source: str | None) -> None:
        if source is not None and source in sources.registry:
            await cache.forget(source_pages(source))

    notices = SourceNotices(
        runtime.redis,
        runtime.key("sources"),
        on_sources_changed=sources_changed,
        on_profiles_refreshed=profiles_refreshed,
    )
    sources.on_file_changed = file_changed
    notices.start()
    return notices
