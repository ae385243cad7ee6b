"""One settings object, built once from the environment at start-up and validated; nothing else reads os.environ."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

Role = Literal["admin", "analyst", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "analyst", "viewer")

_USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MCP_MAX_BODY_BYTES = 4 * 1024 * 1024  # the MCP SDK's own limit on a streamable HTTP request body
# Asymmetric only: the server holds the issuer's public key, never a shared secret.
OAUTH_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


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


def _entries(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_api_keys(raw: str) -> tuple[ApiKeyEntry, ...]:
    entries: list[ApiKeyEntry] = []
    for position, item in enumerate(_entries(raw), start=1):
        pieces = [piece.strip() for piece in item.split(":")]
        if len(pieces) != 3:
            raise ConfigError(
                f"API_KEYS entry {position} is not 'user_id:role:sha256hex'; "
                "generate one with 'analytics-mcp apikey --user U --role R'"
            )
        user_id, role, digest = pieces[0], pieces[1], pieces[2].lower()
        if not _USER_ID.match(user_id):
            raise ConfigError(f"API_KEYS entry {position}: user id must be 1-64 letters, digits or _.@-")
        if role not in ROLES:
            raise ConfigError(
                f"API_KEYS entry {position} ({user_id}): role '{role[:20]}' is not one of admin, analyst, viewer"
            )
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(
                f"API_KEYS entry {position} ({user_id}): the digest must be 64 hex characters (sha256 of the key)"
            )
        entries.append(ApiKeyEntry(user_id, role, digest))
    return tuple(entries)


def parse_fernet_keys(raw: str) -> tuple[str, ...]:
    keys = tuple(_entries(raw))
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise ConfigError(
                f"SESSION_ENCRYPTION_KEY entry {position} is not a Fernet key (32 url-safe base64 bytes); make "
                "one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    return keys


def parse_allowed_functions(raw: str) -> frozenset[str]:
    """QUERY_ALLOWED_FUNCTIONS: comma-separated `name` or `schema.name`, folded as PostgreSQL folds them."""
    entries = frozenset(entry.lower() for entry in _entries(raw))
    for entry in sorted(entries):
        if not re.fullmatch(r"([a-z_][a-z0-9_$]{0,62}\.)?[a-z_][a-z0-9_$]{0,62}", entry):
            raise ConfigError(
                f"QUERY_ALLOWED_FUNCTIONS entry '{entry[:70]}' is not a function name or schema.name "
                "(letters, digits, _ and $), e.g. crosstab or public.crosstab"
            )
    return entries


def parse_redis_nodes(raw: str, name: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port,...` (REDIS_CLUSTER_NODES, REDIS_SENTINELS) as (host, port) pairs."""
    nodes: list[tuple[str, int]] = []
    for entry in _entries(raw):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
            raise ConfigError(f"{name} must be host:port,host:port,...; '{entry[:40]}' is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)


@dataclass(frozen=True)
class OAuthSettings:
    """OAuth 2.1 bearer JWTs from one issuer: verified with its key set (JWKS URL) or one public key."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key: str | None = None  # PEM text read from OAUTH_PUBLIC_KEY's file
    role_claim: str = "role"
    algorithm: str = "RS256"


def _oauth_url(name: str, url: str) -> str:
    local = re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/\S*)?$", url)
    if not (re.match(r"^https://[^/\s]+(/\S*)?$", url) or local):
        raise ConfigError(
            f"{name} must be an https:// URL (http:// only for 127.0.0.1 or localhost), got '{url[:60]}'"
        )
    return url


def parse_oauth(env: Mapping[str, str]) -> OAuthSettings | None:
    """OAUTH_*: None when OAUTH_ISSUER is unset (API keys only)."""
    issuer, jwks_url, key_path, audience, role_claim, algorithm = (
        env.get(f"OAUTH_{name}", "").strip()
        for name in ("ISSUER", "JWKS_URL", "PUBLIC_KEY", "AUDIENCE", "ROLE_CLAIM", "ALGORITHM")
    )
    if not issuer:
        if jwks_url or key_path or audience:
            raise ConfigError(
                "OAUTH_ISSUER is not set; set it to turn OAuth on, or unset the other OAUTH_ settings"
            )
        return None
    if bool(jwks_url) == bool(key_path):
        raise ConfigError(
            "set exactly one of OAUTH_JWKS_URL (the issuer's key set) or OAUTH_PUBLIC_KEY (path of a PEM file)"
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
    if not audience:
        raise ConfigError(
            "OAUTH_AUDIENCE is required with OAUTH_ISSUER: the audience your issuer puts in tokens"
        )
    role_claim, algorithm = role_claim or "role", algorithm or "RS256"
    if len(role_claim) > 200 or any(c.isspace() for c in role_claim):
        raise ConfigError("OAUTH_ROLE_CLAIM must be a claim name without spaces, e.g. role")
    if algorithm not in OAUTH_ALGORITHMS:
        raise ConfigError(
            f"OAUTH_ALGORITHM must be one of {', '.join(OAUTH_ALGORITHMS)}, got '{algorithm[:20]}'"
        )
    return OAuthSettings(
        issuer=_oauth_url("OAUTH_ISSUER", issuer),
        audience=audience,
        jwks_url=_oauth_url("OAUTH_JWKS_URL", jwks_url) if jwks_url else None,
        public_key=public_key,
        role_claim=role_claim,
        algorithm=algorithm,
    )


def _read(parse: Callable[..., Any], *args: str) -> Any:
    """A variable read by `parse` from its text (pydantic-settings would JSON-decode a list or a set)."""
    return BeforeValidator(lambda raw: parse(raw, *args) if isinstance(raw, str) else raw)


def _blank_is_none(value: Any) -> Any:
    return (value.strip() or None) if isinstance(value, str) else value


def _redis_url(name: str) -> AfterValidator:
    def check(url: str | None) -> str | None:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{name} must start with redis://, rediss:// or unix://")
        return url

    return AfterValidator(check)


def _base_url(url: str | None) -> str | None:
    url = (url or "").rstrip("/")
    if url and not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        raise ConfigError(
            f"PUBLIC_BASE_URL must be an http(s) URL like https://analytics.example.com, got '{url[:60]}'"
        )
    return url or None


def _log_level(raw: str) -> str:
    level = raw.strip().upper() or "INFO"
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got '{level[:20]}'")
    return level


Text = Annotated[str | None, BeforeValidator(_blank_is_none)]
Nodes = tuple[tuple[str, int], ...]


def _number(default: int, low: int, high: int, env: str | None = None) -> Any:
    """A whole-number setting from `low` to `high`; `env` names its variable when it is not the field's name."""
    return Field(default, ge=low, le=high, validation_alias=env)


class Settings(BaseSettings):
    """Each field is read from the variable of its name upper-cased (DATABASE_URL), or the alias given."""

    model_config = SettingsConfigDict(frozen=True, env_ignore_empty=True, extra="ignore")

    database_url: Text = None
    database_read_url: Text = None
    # A read-only account the operator made for agent queries; None: the server makes its own role.
    database_query_url: Text = None
    # Functions agent queries may call besides PostgreSQL's built-ins: `name` or `schema.name`.
    query_allowed_functions: Annotated[frozenset[str], NoDecode, _read(parse_allowed_functions)] = frozenset()
    redis_url: Annotated[Text, _redis_url("REDIS_URL")] = None
    # Redis Cluster (REDIS_CLUSTER_NODES) or Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER) instead of
    # REDIS_URL: (host, port) pairs; never an embedded Redis then.
    redis_cluster_nodes: Annotated[Nodes, NoDecode, _read(parse_redis_nodes, "REDIS_CLUSTER_NODES")] = ()
    redis_sentinels: Annotated[Nodes, NoDecode, _read(parse_redis_nodes, "REDIS_SENTINELS")] = ()
    redis_sentinel_master: Text = None
    # The data nodes' password in cluster and Sentinel mode (REDIS_URL carries its own).
    redis_password: str | None = Field(None, repr=False)
    redis_key_prefix: str = ""
    cache_redis_url: Annotated[Text, _redis_url("CACHE_REDIS_URL")] = (
        None  # a Redis of its own for cached answers; None: the session Redis
    )
    cache_max_entry_bytes: int = _number(256_000, 0, 100_000_000)  # larger answers are not cached
    api_keys: Annotated[tuple[ApiKeyEntry, ...], NoDecode, _read(parse_api_keys)] = ()
    session_encryption_keys: Annotated[tuple[str, ...], NoDecode, _read(parse_fernet_keys)] = Field(
        (), validation_alias="SESSION_ENCRYPTION_KEY"
    )
    session_max_value_bytes: int = _number(16_000_000, 1_000, 1_000_000_000)  # stored size of one value
    session_max_bytes: int = _number(64_000_000, 1_000, 10_000_000_000)  # of all values of one session
    session_max_ttl_seconds: int = _number(30 * 86_400, 60, 366 * 86_400)
    session_max_keys: int = _number(1_000, 1, 100_000)  # a new key beyond it is refused
    rate_limit_per_minute: int = _number(600, 1, 1_000_000)  # calls per RATE_LIMIT_WINDOW_SECONDS
    rate_limit_window_seconds: int = _number(60, 1, 3600)
    # The MCP SDK refuses bodies over 4 MiB itself; arguments get a little less, room for the envelope.
    max_request_bytes: int = _number(4_000_000, 10_000, MCP_MAX_BODY_BYTES)  # HTTP 413 above
    max_argument_bytes: int = _number(3_900_000, 1_000, MCP_MAX_BODY_BYTES)  # JSON of one call's arguments
    call_timeout_seconds: int = _number(180, 1, 86_400, "TOOL_TIMEOUT_SECONDS")  # any tool, resource, prompt
    query_max_concurrent_per_key: int = _number(4, 1, 250)  # one user's connections at once (per instance)
    query_seconds_per_minute: int = _number(300, 1, 1_000_000)  # query_database seconds per user per minute
    otel_endpoint: Text = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")  # tracing when set
    metrics_public: bool = False  # true: GET /metrics without a key (a private scrape network)
    log_level: Annotated[str, AfterValidator(_log_level)] = "INFO"
    mcp_api_key: Text = None
    home: Path = Field(Path(".analytics-mcp"), validation_alias="ANALYTICS_MCP_HOME")
    pool_min_size: int = _number(5, 1, 100, "DB_POOL_MIN_SIZE")
    pool_max_size: int = _number(20, 1, 500, "DB_POOL_MAX_SIZE")
    query_max_rows_cap: int = _number(10_000, 1, 1_000_000)
    query_max_bytes: int = _number(500_000, 10_000, 1_000_000_000)  # JSON of a query's inline rows
    dataset_max_rows: int = _number(1_000_000, 1, 50_000_000)
    dataset_max_bytes: int = _number(200_000_000, 10_000, 10_000_000_000)  # what a save_as query fetches
    import_dir: Annotated[Path | None, BeforeValidator(_blank_is_none)] = None
    import_max_bytes: int = _number(100_000_000, 1_000, 2_000_000_000)  # one imported file, before parsing
    import_max_stream_bytes: int = _number(50_000_000, 1_000, 2_000_000_000)  # one PDF stream or xlsx part
    demo_customers: int = _number(5_000, 1, 10_000_000)
    demo_seed: int = _number(42, 0, 2**31 - 1)
    schema_cache_seconds: int = _number(5, 0, 3600)  # how long schema:// pages are reused
    chart_workers: int = _number(0, 0, 64)  # chart render processes; 0: one fewer than the cores
    # The server's address as clients reach it (behind a proxy: its public URL), for links in answers;
    # None: the request's own host.
    public_base_url: Annotated[str | None, AfterValidator(_base_url)] = None
    artifact_ttl_seconds: int = _number(3600, 60, 7 * 86_400)  # charts drawn without a session
    oauth: OAuthSettings | None = None  # OAUTH_*, read by parse_oauth: bearer JWTs besides API keys
    sources_path: Path | None = Field(None, validation_alias="ANALYTICS_MCP_SOURCES")
    # The environment ${NAME} references in the sources file are read from (never logged).
    sources_env: Mapping[str, str] = Field(default_factory=dict, repr=False, exclude=True)
    # The fallback when Redis is down: other instances' edits arrive through pub/sub (warehouse/notices.py).
    sources_poll_seconds: int = _number(1, 1, 3600)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in ("database_url", "database_read_url", "database_query_url"):
            url = getattr(self, name)
            if url and not url.startswith(("postgres://", "postgresql://")):
                raise ConfigError(f"{name.upper()} must start with postgresql://")
        if self.pool_max_size < self.pool_min_size:
            raise ConfigError("DB_POOL_MAX_SIZE must be at least DB_POOL_MIN_SIZE")
        modes = (
            ("REDIS_URL", self.redis_url),
            ("REDIS_CLUSTER_NODES", self.redis_cluster_nodes),
            ("REDIS_SENTINELS", self.redis_sentinels),
        )
        chosen = [name for name, value in modes if value]
        if len(chosen) > 1:
            raise ConfigError(
                f"{' and '.join(chosen)} are set together: set one of REDIS_URL (one Redis), "
                "REDIS_CLUSTER_NODES (Redis Cluster) or REDIS_SENTINELS (Sentinel)"
            )
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ConfigError(
                "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER: the master name the sentinels monitor"
            )
        if (self.redis_cluster_nodes or self.redis_sentinels) and {"{", "}"} & set(self.redis_key_prefix):
            raise ConfigError("REDIS_KEY_PREFIX must not hold { or }: keys carry their own hash tags")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # Settings() is the defaults; from_env reads the environment it is given

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            return cls(**{**_Environment(cls, env)(), "oauth": parse_oauth(env), "sources_env": dict(env)})
        except ValidationError as error:
            raise ConfigError(_one_line(error)) from None

    def with_changes(self, **changes: object) -> Settings:
        return self.model_copy(update=changes)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping: os.environ at start-up, a dict in tests."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self.env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            name.lower(): value for name, value in self.env.items() if value != ""
        }  # as case_sensitive=False


def _one_line(error: ValidationError) -> str:
    """pydantic's first complaint about a variable as one line naming it (whole numbers and booleans)."""
    first = error.errors()[0]
    name, got = str(first["loc"][0]).upper(), str(first.get("input", ""))[:20]
    if first["type"] == "bool_parsing":
        return f"{name} must be true or false, got '{got}'"
    fields = [f for n, f in Settings.model_fields.items() if str(f.validation_alias or n).upper() == name]
    bounds = {type(rule).__name__: rule for field in fields for rule in field.metadata}
    if "Ge" in bounds and "Le" in bounds:
        return f"{name} must be a whole number from {bounds['Ge'].ge} to {bounds['Le'].le}, got '{got}'"
    return f"{name}: {first['msg']}"
