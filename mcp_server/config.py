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
        entries.append(ApiKeyEntry(user_id, role, digest.lower()))  # type: ignore[arg-type]
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


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    database_read_url: str | None = None
    redis_url: str | None = None
    redis_key_prefix: str = ""
    api_keys: tuple[ApiKeyEntry, ...] = ()
    session_encryption_keys: tuple[str, ...] = ()
    session_max_value_bytes: int = 16_000_000  # stored (compressed, encrypted) size of one session value
    session_max_bytes: int = 64_000_000  # stored size of all values of one session
    session_max_ttl_seconds: int = 30 * 86_400  # longest ttl_seconds session_create/extend accept
    rate_limit_per_minute: int = 600
    rate_limit_window_seconds: int = 60  # the rate limit's window; RATE_LIMIT_PER_MINUTE calls per window
    max_request_bytes: int = 16_000_000  # largest HTTP request body accepted (413 above)
    max_argument_bytes: int = 8_000_000  # largest JSON encoding of one call's arguments
    call_timeout_seconds: int = 600  # no tool, resource or prompt call runs longer than this
    otel_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: tracing is on when set
    log_level: str = "INFO"
    mcp_api_key: str | None = None
    home: Path = field(default_factory=lambda: Path(".analytics-mcp"))
    pool_min_size: int = 5
    pool_max_size: int = 20
    query_max_rows_cap: int = 10_000
    query_max_bytes: int = 4_000_000
    dataset_max_rows: int = 1_000_000
    import_dir: Path | None = None
    import_max_bytes: int = 100_000_000  # one imported file (decoded), before parsing
    demo_customers: int = 5_000
    demo_seed: int = 42
    schema_cache_seconds: int = 5  # how long schema:// resources are reused before re-reading the catalog
    chart_workers: int = 0  # chart render processes; 0: one fewer than the cores (at least 1)

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
        for name in ("DATABASE_URL", "DATABASE_READ_URL"):
            url = env.get(name, "").strip()
            if url and not url.startswith(("postgres://", "postgresql://")):
                raise ConfigError(f"{name} must start with postgresql://")
        redis_url = env.get("REDIS_URL", "").strip() or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        import_dir = env.get("IMPORT_DIR", "").strip()
        return cls(
            database_url=env.get("DATABASE_URL", "").strip() or None,
            database_read_url=env.get("DATABASE_READ_URL", "").strip() or None,
            redis_url=redis_url,
            redis_key_prefix=env.get("REDIS_KEY_PREFIX", ""),
            api_keys=parse_api_keys(env.get("API_KEYS", "")),
            session_encryption_keys=parse_fernet_keys(env.get("SESSION_ENCRYPTION_KEY", "")),
            session_max_value_bytes=_int(env, "SESSION_MAX_VALUE_BYTES", 16_000_000, 1_000, 1_000_000_000),
            session_max_bytes=_int(env, "SESSION_MAX_BYTES", 64_000_000, 1_000, 10_000_000_000),
            session_max_ttl_seconds=_int(env, "SESSION_MAX_TTL_SECONDS", 30 * 86_400, 60, 366 * 86_400),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 600, 1, 1_000_000),
            rate_limit_window_seconds=_int(env, "RATE_LIMIT_WINDOW_SECONDS", 60, 1, 3600),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", 16_000_000, 10_000, 1_000_000_000),
            max_argument_bytes=_int(env, "MAX_ARGUMENT_BYTES", 8_000_000, 1_000, 1_000_000_000),
            call_timeout_seconds=_int(env, "TOOL_TIMEOUT_SECONDS", 600, 1, 86_400),
            otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None,
            log_level=level,
            mcp_api_key=env.get("MCP_API_KEY", "").strip() or None,
            home=Path(env.get("ANALYTICS_MCP_HOME", "").strip() or ".analytics-mcp"),
            pool_min_size=pool_min,
            pool_max_size=pool_max,
            query_max_rows_cap=_int(env, "QUERY_MAX_ROWS_CAP", 10_000, 1, 1_000_000),
            query_max_bytes=_int(env, "QUERY_MAX_BYTES", 4_000_000, 10_000, 1_000_000_000),
            dataset_max_rows=_int(env, "DATASET_MAX_ROWS", 1_000_000, 1, 50_000_000),
            import_dir=Path(import_dir) if import_dir else None,
            import_max_bytes=_int(env, "IMPORT_MAX_BYTES", 100_000_000, 1_000, 2_000_000_000),
            demo_customers=_int(env, "DEMO_CUSTOMERS", 5_000, 1, 10_000_000),
            demo_seed=_int(env, "DEMO_SEED", 42, 0, 2**31 - 1),
            schema_cache_seconds=_int(env, "SCHEMA_CACHE_SECONDS", 5, 0, 3600),
            chart_workers=_int(env, "CHART_WORKERS", 0, 0, 64),
        )

    def with_changes(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
