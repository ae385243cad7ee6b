"""One settings object, built once from the environment at start-up and validated; nothing else reads os.environ."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet

Role = Literal["admin", "analyst", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "analyst", "viewer")

_USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MCP_MAX_BODY_BYTES = 4 * 1024 * 1024  # the MCP SDK's own limit on a streamable HTTP request body


class ConfigError(Exception):
    """A setting is malformed; the message names the variable (and entry) and the fix."""


@dataclass(frozen=True)
class ApiKeyEntry:
    user_id: str
    role: Role
    digest: str  # sha256 hex of the key

    @property
    def key_id(self) -> str:
        """A short, non-secret name for the key, safe for logs."""
        return self.digest[:12]


def digest_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(raw: str) -> tuple[ApiKeyEntry, ...]:
    entries: list[ApiKeyEntry] = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        pieces = item.split(":")
        if len(pieces) != 3:
            raise ConfigError(
                f"API_KEYS entry {position} is not 'user_id:role:sha256hex'; "
                "generate one with 'analytics-mcp apikey --user U --role R'"
            )
        user_id, role, digest = (p.strip() for p in pieces)
        if not _USER_ID.match(user_id):
            raise ConfigError(f"API_KEYS entry {position}: user id must be 1-64 letters, digits or _.@-")
        if role not in ROLES:
            raise ConfigError(
                f"API_KEYS entry {position} ({user_id}): role '{role[:20]}' is not one of "
                "admin, analyst, viewer"
            )
        if not _HEX64.match(digest.lower()):
            raise ConfigError(
                f"API_KEYS entry {position} ({user_id}): the digest must be 64 hex characters "
                "(sha256 of the key)"
            )
        entries.append(ApiKeyEntry(user_id, role, digest.lower()))
    return tuple(entries)


def parse_fernet_keys(raw: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise ConfigError(
                f"SESSION_ENCRYPTION_KEY entry {position} is not a Fernet key (32 url-safe "
                "base64 bytes); make one with: python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    return keys


_FUNCTION_NAME = re.compile(r"^([a-z_][a-z0-9_$]{0,62}\.)?[a-z_][a-z0-9_$]{0,62}$")


def parse_allowed_functions(raw: str) -> frozenset[str]:
    """QUERY_ALLOWED_FUNCTIONS: comma-separated `name` or `schema.name`, folded as PostgreSQL folds them."""
    entries = frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
    for entry in sorted(entries):
        if not _FUNCTION_NAME.match(entry):
            raise ConfigError(
                f"QUERY_ALLOWED_FUNCTIONS entry '{entry[:70]}' is not a function name or schema.name "
                "(letters, digits, _ and $), e.g. crosstab or public.crosstab"
            )
    return entries


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got '{raw[:20]}'") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in {"", "true", "false", "1", "0", "yes", "no"}:
        raise ConfigError(f"{name} must be true or false, got '{raw[:20]}'")
    return raw in {"true", "1", "yes"}


def parse_redis_nodes(env: Mapping[str, str], name: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port,...` (REDIS_CLUSTER_NODES, REDIS_SENTINELS) as (host, port) pairs."""
    nodes: list[tuple[str, int]] = []
    for entry in (part.strip() for part in env.get(name, "").split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
            raise ConfigError(f"{name} must be host:port,host:port,...; '{entry[:40]}' is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)


def _redis_mode(env: Mapping[str, str], redis_url: str | None) -> tuple[tuple[tuple[str, int], ...], ...]:
    """(cluster nodes, sentinels): at most one of REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS."""
    cluster = parse_redis_nodes(env, "REDIS_CLUSTER_NODES")
    sentinels = parse_redis_nodes(env, "REDIS_SENTINELS")
    chosen = [
        name
        for name, on in (
            ("REDIS_URL", redis_url),
            ("REDIS_CLUSTER_NODES", cluster),
            ("REDIS_SENTINELS", sentinels),
        )
        if on
    ]
    if len(chosen) > 1:
        raise ConfigError(
            f"{' and '.join(chosen)} are set together: set one of REDIS_URL (one Redis), "
            "REDIS_CLUSTER_NODES (Redis Cluster) or REDIS_SENTINELS (Sentinel)"
        )
    if sentinels and not env.get("REDIS_SENTINEL_MASTER", "").strip():
        raise ConfigError(
            "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER: the master name the sentinels monitor"
        )
    if (cluster or sentinels) and (
        "{" in env.get("REDIS_KEY_PREFIX", "") or "}" in env.get("REDIS_KEY_PREFIX", "")
    ):
        raise ConfigError("REDIS_KEY_PREFIX must not hold { or }: keys carry their own hash tags")
    return cluster, sentinels


def _base_url(raw: str) -> str | None:
    url = raw.strip().rstrip("/")
    if url and not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        raise ConfigError(
            f"PUBLIC_BASE_URL must be an http(s) URL like https://analytics.example.com, got '{url[:60]}'"
        )
    return url or None


_LOCAL_HTTP = re.compile(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/\S*)?$")
# Asymmetric only: the server holds the issuer's public key, never a shared secret.
OAUTH_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True)
class OAuthSettings:
    """OAuth 2.1 bearer JWTs from one issuer: verified with its key set (JWKS URL) or one public key."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key: str | None = None  # PEM text read from OAUTH_PUBLIC_KEY's file
    role_claim: str = "role"
    algorithm: str = "RS256"


def _oauth_url(name: str, raw: str) -> str:
    url = raw.strip()
    if not (re.match(r"^https://[^/\s]+(/\S*)?$", url) or _LOCAL_HTTP.match(url)):
        raise ConfigError(
            f"{name} must be an https:// URL (http:// only for 127.0.0.1 or localhost), got '{url[:60]}'"
        )
    return url


def parse_oauth(env: Mapping[str, str]) -> OAuthSettings | None:
    """OAUTH_*: None when OAUTH_ISSUER is unset (API keys only)."""
    issuer = env.get("OAUTH_ISSUER", "").strip()
    others = ("OAUTH_JWKS_URL", "OAUTH_PUBLIC_KEY", "OAUTH_AUDIENCE")
    if not issuer:
        if any(env.get(name, "").strip() for name in others):
            raise ConfigError(
                "OAUTH_ISSUER is not set; set it to turn OAuth on, or unset the other OAUTH_ settings"
            )
        return None
    issuer = _oauth_url("OAUTH_ISSUER", issuer)
    jwks_url = env.get("OAUTH_JWKS_URL", "").strip()
    key_path = env.get("OAUTH_PUBLIC_KEY", "").strip()
    if bool(jwks_url) == bool(key_path):
        raise ConfigError(
            "set exactly one of OAUTH_JWKS_URL (the issuer's key set) "
            "or OAUTH_PUBLIC_KEY (path of a PEM file)"
        )
    public_key = None
    if key_path:
        try:
            public_key = Path(key_path).read_text()
        except (OSError, UnicodeDecodeError):
            raise ConfigError("OAUTH_PUBLIC_KEY must be the path of a readable PEM public key file") from None
        if "-----BEGIN" not in public_key or "PRIVATE KEY" in public_key:
            raise ConfigError(
                "OAUTH_PUBLIC_KEY's file must hold a PEM public key (-----BEGIN PUBLIC KEY-----)"
            )
    audience = env.get("OAUTH_AUDIENCE", "").strip()
    if not audience:
        raise ConfigError(
            "OAUTH_AUDIENCE is required with OAUTH_ISSUER: the audience your issuer puts in tokens"
        )
    role_claim = env.get("OAUTH_ROLE_CLAIM", "").strip() or "role"
    if len(role_claim) > 200 or any(c.isspace() for c in role_claim):
        raise ConfigError("OAUTH_ROLE_CLAIM must be a claim name without spaces, e.g. role")
    algorithm = env.get("OAUTH_ALGORITHM", "").strip() or "RS256"
    if algorithm not in OAUTH_ALGORITHMS:
        raise ConfigError(
            f"OAUTH_ALGORITHM must be one of {', '.join(OAUTH_ALGORITHMS)}, got '{algorithm[:20]}'"
        )
    return OAuthSettings(
        issuer=issuer,
        audience=audience,
        jwks_url=_oauth_url("OAUTH_JWKS_URL", jwks_url) if jwks_url else None,
        public_key=public_key,
        role_claim=role_claim,
        algorithm=algorithm,
    )


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    database_read_url: str | None = None
    # A read-only account the operator made for agent queries; None: the server makes its own role.
    database_query_url: str | None = None
    # Functions agent queries may call besides PostgreSQL's built-ins: `name` or `schema.name`.
    query_allowed_functions: frozenset[str] = frozenset()
    redis_url: str | None = None
    # Redis Cluster (REDIS_CLUSTER_NODES) or Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER) instead of
    # REDIS_URL: (host, port) pairs; never an embedded Redis then.
    redis_cluster_nodes: tuple[tuple[str, int], ...] = ()
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    # REDIS_PASSWORD: the data nodes' password in cluster and Sentinel mode (REDIS_URL carries its own).
    redis_password: str | None = field(default=None, repr=False)
    redis_key_prefix: str = ""
    cache_redis_url: str | None = None  # a Redis of its own for cached answers; None: the session Redis
    cache_max_entry_bytes: int = 256_000  # stored size of one cached answer; larger ones are not cached
    api_keys: tuple[ApiKeyEntry, ...] = ()
    session_encryption_keys: tuple[str, ...] = ()
    session_max_value_bytes: int = 16_000_000  # stored (compressed, encrypted) size of one session value
    session_max_bytes: int = 64_000_000  # stored size of all values of one session
    session_max_ttl_seconds: int = 30 * 86_400  # longest ttl_seconds session_create/extend accept
    session_max_keys: int = 1_000  # keys one session may hold; a new key beyond it is refused
    rate_limit_per_minute: int = 600
    rate_limit_window_seconds: int = 60  # the rate limit's window; RATE_LIMIT_PER_MINUTE calls per window
    # The MCP SDK's streamable HTTP transport refuses bodies over 4 MiB (4,194,304 bytes) itself, so
    # that is the most MAX_REQUEST_BYTES may say; arguments get a little less, room for the envelope.
    max_request_bytes: int = 4_000_000  # largest HTTP request body accepted (413 above)
    max_argument_bytes: int = 3_900_000  # largest JSON encoding of one call's arguments
    call_timeout_seconds: int = 180  # no tool, resource or prompt call runs longer than this
    query_max_concurrent_per_key: int = 4  # one user's database connections at once (per instance)
    query_seconds_per_minute: int = 300  # database seconds of query_database per user per minute
    otel_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: tracing is on when set
    metrics_public: bool = False  # METRICS_PUBLIC=true: GET /metrics without a key (a private scrape network)
    log_level: str = "INFO"
    mcp_api_key: str | None = None
    home: Path = field(default_factory=lambda: Path(".analytics-mcp"))
    pool_min_size: int = 5
    pool_max_size: int = 20
    query_max_rows_cap: int = 10_000
    query_max_bytes: int = 500_000  # JSON size of the rows a query returns inline (at most 900 KB apply)
    dataset_max_rows: int = 1_000_000
    dataset_max_bytes: int = 200_000_000  # data a save_as query fetches (JSON size of its rows)
    import_dir: Path | None = None
    import_max_bytes: int = 100_000_000  # one imported file (decoded), before parsing
    import_max_stream_bytes: int = 50_000_000  # what one PDF stream or xlsx part may inflate to
    demo_customers: int = 5_000
    demo_seed: int = 42
    schema_cache_seconds: int = 5  # how long schema:// resources are reused before re-reading the catalog
    chart_workers: int = 0  # chart render processes; 0: one fewer than the cores (at least 1)
    # The server's address as clients reach it (behind a proxy: its public URL), for links in answers such
    # as an HTML chart's <script src=".../assets/plotly.min.js">; None: the request's own host.
    public_base_url: str | None = None
    artifact_ttl_seconds: int = 3600  # charts drawn without a session are kept this long (artifact://)
    oauth: OAuthSettings | None = None  # OAUTH_ISSUER ...: bearer JWTs as a second way in besides API keys
    sources_path: Path | None = None  # ANALYTICS_MCP_SOURCES: the TOML file naming the data sources
    # The environment ${NAME} references in the sources file are read from (never logged or compared).
    sources_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # How often the sources file is re-read (SOURCES_POLL_SECONDS); other instances' edits arrive at once
    # through Redis pub/sub (mcp_server/notices.py), so polling is the fallback when Redis is down.
    sources_poll_seconds: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got '{level[:20]}'"
            )
        pool_min = _int(env, "DB_POOL_MIN_SIZE", 5, 1, 100)
        pool_max = _int(env, "DB_POOL_MAX_SIZE", 20, 1, 500)
        if pool_max < pool_min:
            raise ConfigError("DB_POOL_MAX_SIZE must be at least DB_POOL_MIN_SIZE")
        for name in ("DATABASE_URL", "DATABASE_READ_URL", "DATABASE_QUERY_URL"):
            url = env.get(name, "").strip()
            if url and not url.startswith(("postgres://", "postgresql://")):
                raise ConfigError(f"{name} must start with postgresql://")
        redis_url = env.get("REDIS_URL", "").strip() or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        redis_cluster_nodes, redis_sentinels = _redis_mode(env, redis_url)
        cache_redis_url = env.get("CACHE_REDIS_URL", "").strip() or None
        if cache_redis_url and not cache_redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("CACHE_REDIS_URL must start with redis://, rediss:// or unix://")
        import_dir = env.get("IMPORT_DIR", "").strip()
        return cls(
            database_url=env.get("DATABASE_URL", "").strip() or None,
            database_read_url=env.get("DATABASE_READ_URL", "").strip() or None,
            database_query_url=env.get("DATABASE_QUERY_URL", "").strip() or None,
            query_allowed_functions=parse_allowed_functions(env.get("QUERY_ALLOWED_FUNCTIONS", "")),
            redis_url=redis_url,
            redis_cluster_nodes=redis_cluster_nodes,
            redis_sentinels=redis_sentinels,
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER", "").strip() or None,
            redis_password=env.get("REDIS_PASSWORD", "") or None,
            redis_key_prefix=env.get("REDIS_KEY_PREFIX", ""),
            cache_redis_url=cache_redis_url,
            cache_max_entry_bytes=_int(env, "CACHE_MAX_ENTRY_BYTES", 256_000, 0, 100_000_000),
            api_keys=parse_api_keys(env.get("API_KEYS", "")),
            session_encryption_keys=parse_fernet_keys(env.get("SESSION_ENCRYPTION_KEY", "")),
            session_max_value_bytes=_int(env, "SESSION_MAX_VALUE_BYTES", 16_000_000, 1_000, 1_000_000_000),
            session_max_bytes=_int(env, "SESSION_MAX_BYTES", 64_000_000, 1_000, 10_000_000_000),
            session_max_ttl_seconds=_int(env, "SESSION_MAX_TTL_SECONDS", 30 * 86_400, 60, 366 * 86_400),
            session_max_keys=_int(env, "SESSION_MAX_KEYS", 1_000, 1, 100_000),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 600, 1, 1_000_000),
            rate_limit_window_seconds=_int(env, "RATE_LIMIT_WINDOW_SECONDS", 60, 1, 3600),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", 4_000_000, 10_000, MCP_MAX_BODY_BYTES),
            max_argument_bytes=_int(env, "MAX_ARGUMENT_BYTES", 3_900_000, 1_000, MCP_MAX_BODY_BYTES),
            call_timeout_seconds=_int(env, "TOOL_TIMEOUT_SECONDS", 180, 1, 86_400),
            query_max_concurrent_per_key=_int(env, "QUERY_MAX_CONCURRENT_PER_KEY", 4, 1, 250),
            query_seconds_per_minute=_int(env, "QUERY_SECONDS_PER_MINUTE", 300, 1, 1_000_000),
            otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None,
            metrics_public=_bool(env, "METRICS_PUBLIC"),
            log_level=level,
            mcp_api_key=env.get("MCP_API_KEY", "").strip() or None,
            home=Path(env.get("ANALYTICS_MCP_HOME", "").strip() or ".analytics-mcp"),
            pool_min_size=pool_min,
            pool_max_size=pool_max,
            query_max_rows_cap=_int(env, "QUERY_MAX_ROWS_CAP", 10_000, 1, 1_000_000),
            query_max_bytes=_int(env, "QUERY_MAX_BYTES", 500_000, 10_000, 1_000_000_000),
            dataset_max_rows=_int(env, "DATASET_MAX_ROWS", 1_000_000, 1, 50_000_000),
            dataset_max_bytes=_int(env, "DATASET_MAX_BYTES", 200_000_000, 10_000, 10_000_000_000),
            import_dir=Path(import_dir) if import_dir else None,
            import_max_bytes=_int(env, "IMPORT_MAX_BYTES", 100_000_000, 1_000, 2_000_000_000),
            import_max_stream_bytes=_int(env, "IMPORT_MAX_STREAM_BYTES", 50_000_000, 1_000, 2_000_000_000),
            demo_customers=_int(env, "DEMO_CUSTOMERS", 5_000, 1, 10_000_000),
            demo_seed=_int(env, "DEMO_SEED", 42, 0, 2**31 - 1),
            schema_cache_seconds=_int(env, "SCHEMA_CACHE_SECONDS", 5, 0, 3600),
            chart_workers=_int(env, "CHART_WORKERS", 0, 0, 64),
            public_base_url=_base_url(env.get("PUBLIC_BASE_URL", "")),
            artifact_ttl_seconds=_int(env, "ARTIFACT_TTL_SECONDS", 3600, 60, 7 * 86_400),
            oauth=parse_oauth(env),
            sources_path=Path(sources) if (sources := env.get("ANALYTICS_MCP_SOURCES", "").strip()) else None,
            sources_env=dict(env),
            sources_poll_seconds=_int(env, "SOURCES_POLL_SECONDS", 1, 1, 3600),
        )

    def with_changes(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
