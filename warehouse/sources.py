"""The source registry: the data sources an operator names in one TOML file (ANALYTICS_MCP_SOURCES),
validated into immutable `Source` models, plus the built-in database as the source `main`.

A registry is never changed in place: a reload builds a new one, so work that holds the old one (an
in-flight query) finishes on the definition it started with. Secrets live only in `Source.url` and
`Source.write_url` (pydantic `SecretStr`); logs, errors and answers use `redacted_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from core.errors import NotFound
from warehouse.descriptions import DescriptionsError, read_descriptions
from warehouse.models.spec import DIALECT_OF_KIND, MetricModel, ModelError, load_model, shipped_model
from warehouse.models.spec import SHIPPED as SHIPPED_MODELS

log = logging.getLogger(__name__)

Kind = Literal["postgresql", "mysql", "files"]

MAIN = "main"
# What `data_source="database"` (the name before sources existed) means: the built-in database.
ALIASES = {"database": MAIN}
MAIN_TABLES = ("customers", "network_events", "revenue")  # warehouse.db.ANALYTICS_TABLES
MAIN_DESCRIPTION = "The built-in telecom demo database: customers, network_events, revenue"

_SCHEMES: dict[str, Kind] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "files": "files",
}
_KEYS = frozenset(
    {"url", "description", "tables", "exclude", "schemas", "model", "write_url", "max_concurrent"}
    | {"descriptions"}
)
# Queries one source runs at once (`max_concurrent`); its connection pool is sized from it.
DEFAULT_MAX_CONCURRENT = 4
MOST_CONCURRENT = 64
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One glob part: letters, digits, _ $ - and the glob characters * ? [ ] ! (no dots, spaces or quotes).
_GLOB_PART = re.compile(r"^[A-Za-z0-9_$*?\[\]!-]+$")
# Relations no source may read, whatever its globs say: catalogs, other engines' internals, our own.
_SYSTEM_SCHEMAS: dict[Kind, tuple[str, ...]] = {
    "postgresql": (
        "pg_catalog",
        "information_schema",
        "pg_toast",
        "pg_temp_*",
        "pg_toast_temp_*",
        "mcp_internal",
    ),
    "mysql": ("mysql", "information_schema", "performance_schema", "sys"),
    "files": ("information_schema", "pg_catalog", "system", "temp"),
}
_SECRET_PARAMETERS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret", "token", "key"})
# Files a files source serves as tables, by suffix (lower case).
DATA_FILE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")


class SourceConfigError(Exception):
    """The sources file is malformed; one line naming the entry and the fix (never a secret)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, even for a quoted name with a newline


class Source(BaseModel):
    """One named data source; frozen, so a reference held by running work never changes under it."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Kind
    url: SecretStr
    redacted_url: str
    description: str = ""
    tables: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()  # postgresql: the schemas read, first is the default; mysql: its database
    model: str | None = None  # the metric model as the TOML names it: telecom, shop or a YAML path
    metric_model: MetricModel | None = None  # that model, loaded and validated (warehouse/models)
    write_url: SecretStr | None = None
    max_concurrent: int = DEFAULT_MAX_CONCURRENT  # queries in flight at once; more wait, then are refused
    descriptions: Path | None = None  # the operator's YAML of table and column descriptions (validated)

    @property
    def scheme(self) -> str:
        """The URL scheme as written: mysql and mariadb share the kind `mysql`."""
        return self.redacted_url.split(":", 1)[0]

    @property
    def default_schema(self) -> str:
        """Where an unqualified table name is read: the first schema, the MySQL database, DuckDB's main."""
        return self.schemas[0] if self.schemas else "main"

    @property
    def directory(self) -> Path:
        """The folder of a files source."""
        if self.kind != "files":
            raise ValueError(f"source '{self.name}' is a {self.kind} source, not a files source")
        return Path(unquote(self.url.get_secret_value()[len("files://") :]))

    def connection_parameters(self) -> dict[str, Any]:
        """host, port, user, password, database and the query options, decoded (for drivers without DSNs)."""
        parts = urlsplit(self.url.get_secret_value())
        return {
            "host": parts.hostname,
            "port": parts.port,
            "user": unquote(parts.username) if parts.username is not None else None,
            "password": unquote(parts.password) if parts.password is not None else None,
            "database": unquote(parts.path.lstrip("/")) or None,
            "options": dict(parse_qsl(parts.query)),
        }

    def allows(self, relation: str) -> bool:
        """Whether `schema.table` (or `table`, read in the default schema) is one this source may read.

        Matching ignores case: an `exclude` must not be escaped by writing `Secrets` for `secrets`.
        """
        schema, dot, table = relation.rpartition(".")
        schema = schema if dot else self.default_schema
        if not table or any(_matches(pattern, schema) for pattern in _SYSTEM_SCHEMAS[self.kind]):
            return False
        if schema.casefold() not in {name.casefold() for name in self.schemas or ("main",)}:
            return False
        if not any(_matches_relation(pattern, schema, table) for pattern in self.tables):
            return False
        return not any(_matches_relation(pattern, schema, table) for pattern in self.exclude)

    def data_files(self) -> dict[str, Path]:
        """A files source's tables: every CSV, TSV, Parquet and JSON-lines file directly in its folder,
        named after the file's stem (`orders.parquet` is `orders`), lower case with other characters as `_`.

        Hidden files and links leading out of the folder are skipped. When two files share a name
        (`orders.csv`, `orders.parquet`), each is named with its suffix (`orders_csv`, `orders_parquet`).
        """
        folder = self.directory.resolve()
        found: dict[str, list[Path]] = {}
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower()
            if path.name.startswith(".") or suffix not in DATA_FILE_SUFFIXES:
                continue
            try:
                target = path.resolve(strict=True)
            except OSError:
                continue
            if target.parent != folder or not target.is_file():
                continue
            found.setdefault(_table_name(path.stem), []).append(path)
        tables: dict[str, Path] = {}
        for name, paths in found.items():
            if len(paths) == 1:
                tables[name] = paths[0]
            else:
                for path in paths:
                    tables[f"{name}_{path.suffix.lower().lstrip('.')}"] = path
        return {name: path for name, path in sorted(tables.items()) if self.allows(name)}


class Registry:
    """The sources of one loaded configuration, by name; immutable, replaced whole on reload."""

    def __init__(self, sources: Mapping[str, Source], digest: str = "") -> None:
        self._sources = dict(sources)
        self.digest = digest  # sha256 of the sources file as read ("" without one): cheap change checks

    def __iter__(self) -> Iterator[Source]:
        return iter(self._sources.values())

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and ALIASES.get(name, name) in self._sources

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registry) and self._sources == other._sources

    def __repr__(self) -> str:
        return f"Registry({', '.join(f'{s.name}={s.redacted_url}' for s in self)})"

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    def get(self, name: str | None = None) -> Source:
        """The source called `name` (None or `database`: the built-in `main`)."""
        key = ALIASES.get(name or MAIN, name or MAIN)
        source = self._sources.get(key)
        if source is None:
            if key == MAIN:
                raise NotFound("the built-in database is not configured; set DATABASE_URL")
            raise NotFound(f"source '{name}' not found; sources: {', '.join(self.names)}")
        return source


def is_source_name(name: str) -> bool:
    """Whether `name` follows the rule of [sources.NAME] (or is the built-in `main`)."""
    return name == MAIN or _NAME.fullmatch(name) is not None


def main_source(url: str) -> Source:
    """The built-in database (DATABASE_URL, the telecom demo) as the source `main`."""
    return Source(
        name=MAIN,
        kind="postgresql",
        url=SecretStr(url),
        redacted_url=redact_url(url),
        description=MAIN_DESCRIPTION,
        tables=MAIN_TABLES,
        schemas=("public",),
        model="telecom",
        metric_model=shipped_model("telecom"),
    )


def load_sources(path: str | Path | None, env: Mapping[str, str], *, main_url: str | None = None) -> Registry:
    """The registry of the TOML file at `path` (None: the built-in database only).

    `main_url` is the built-in database's DSN (default `env["DATABASE_URL"]`); without one there is no
    `main`. Raises SourceConfigError, one line naming the entry, on the first problem found.
    """
    main_url = main_url or env.get("DATABASE_URL") or None
    sources: dict[str, Source] = {MAIN: main_source(main_url)} if main_url else {}
    if path is None:
        return Registry(sources)
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise SourceConfigError(
            f"ANALYTICS_MCP_SOURCES: cannot read the sources file ({error.strerror}); check the path"
        ) from None
    return parse_sources(text, env, base=path.parent, main=sources.get(MAIN))


def parse_sources(text: bytes, env: Mapping[str, str], *, base: Path, main: Source | None = None) -> Registry:
    """The registry of TOML `text`; relative `files://` folders are read from `base`."""
    try:
        document = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise SourceConfigError("ANALYTICS_MCP_SOURCES: the sources file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        duplicate = re.match(r"Cannot declare \('sources', '([^']*)'\) twice \((at line \d+)", str(error))
        if duplicate:
            raise SourceConfigError(
                f"ANALYTICS_MCP_SOURCES: [sources.{duplicate[1]}] is declared twice ({duplicate[2]}); "
                "source names must be unique"
            ) from None
        raise SourceConfigError(f"ANALYTICS_MCP_SOURCES: not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"sources"})
    if unknown:
        raise SourceConfigError(
            f"ANALYTICS_MCP_SOURCES: unknown section [{unknown[0]}]; sources are [sources.NAME] tables"
        )
    entries = document.get("sources", {})
    if not isinstance(entries, dict):
        raise SourceConfigError("ANALYTICS_MCP_SOURCES: 'sources' must be a table of [sources.NAME] entries")
    sources: dict[str, Source] = {MAIN: main} if main is not None else {}
    for name, entry in entries.items():
        sources[name] = _source(name, entry, env, base)
    return Registry(sources, sources_digest(text, base))


def sources_digest(text: bytes, base: Path) -> str:
    """sha256 of the sources file and of the metric model files it names (relative to `base`), so an
    edit of a model's YAML is a change of the sources too (the watcher reloads them)."""
    digest = hashlib.sha256(text)
    try:
        entries = tomllib.loads(text.decode("utf-8")).get("sources", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return digest.hexdigest()  # parse_sources says what is wrong with it
    for entry in entries.values() if isinstance(entries, dict) else ():
        model = entry.get("model") if isinstance(entry, dict) else None
        if isinstance(model, str) and model.strip() not in SHIPPED_MODELS:
            try:
                digest.update(b"\0" + (base / Path(model.strip()).expanduser()).read_bytes())
            except OSError:
                digest.update(b"\0missing")
    return digest.hexdigest()


def _source(name: str, entry: Any, env: Mapping[str, str], base: Path) -> Source:
    where = f"ANALYTICS_MCP_SOURCES: [sources.{name}]"

    def fail(problem: str) -> SourceConfigError:
        return SourceConfigError(f"{where} {problem}")

    if name in (MAIN, *ALIASES):
        raise fail(f"'{name}' is reserved for the built-in database (DATABASE_URL); choose another name")
    if not _NAME.match(name):
        raise fail("name must be a lower-case letter then up to 31 lower-case letters, digits or _")
    if not isinstance(entry, dict):
        raise fail("must be a table of settings (url = ..., description = ...)")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise fail(f"unknown setting '{unknown[0]}'; settings: {', '.join(sorted(_KEYS))}")
    if "url" not in entry:
        raise fail("needs a url (postgresql://, mysql://, mariadb:// or files:///folder)")

    def text(key: str) -> str | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise fail(f"{key} must be a string")
        return _expand(value, env, fail, key)

    def globs(key: str) -> tuple[str, ...] | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise fail(f'{key} must be a list of strings, e.g. {key} = ["orders", "sales.*"]')
        return tuple(_expand(item, env, fail, key).strip() for item in value)

    url = _expand_url(entry["url"], env, fail, "url") if isinstance(entry["url"], str) else None
    if url is None:
        raise fail("url must be a string")
    kind = _check_url(url, fail, "url", base)
    if kind == "files":
        url = "files://" + quote(str(_files_folder(url, base)), safe="/")
    write_url = None
    if entry.get("write_url") is not None:
        if not isinstance(entry["write_url"], str):
            raise fail("write_url must be a string")
        write_url = _expand_url(entry["write_url"], env, fail, "write_url")
        if _check_url(write_url, fail, "write_url", base) != kind:
            raise fail(f"write_url must be a {kind} url like url")
        if kind == "files":
            raise fail("write_url is for database sources; a files source is read only")

    tables = globs("tables")
    exclude = globs("exclude") or ()
    schemas = globs("schemas")
    if tables is not None and not tables:
        raise fail('tables is empty, so nothing could be read; use tables = ["*"] for every table')
    for key, patterns in (("tables", tables or ()), ("exclude", exclude)):
        for pattern in patterns:
            problem = _glob_problem(pattern, kind)
            if problem:
                raise fail(f"{key}: bad glob '{pattern[:40]}': {problem}")
    if kind == "postgresql":
        if schemas is not None and not schemas:
            raise fail('schemas is empty, so nothing could be read; leave it out for ["public"]')
        schemas = schemas or ("public",)
        if len(set(schemas)) != len(schemas):
            raise fail("schemas lists a schema twice")
        for schema in schemas:
            if not _GLOB_PART.match(schema) or any(ch in schema for ch in "*?[]!") or len(schema) > 63:
                raise fail(f"schemas: '{schema[:40]}' is not a schema name (no globs, 1-63 characters)")
            if any(_matches(system, schema) for system in _SYSTEM_SCHEMAS["postgresql"]):
                raise fail(f"schemas: '{schema}' is a system schema and is never readable")
    elif schemas is not None:
        raise fail(
            "schemas is for postgresql sources; a mysql source reads the database in its url"
            if kind == "mysql"
            else "schemas is for postgresql sources; a files source has no schemas"
        )
    elif kind == "mysql":
        database = unquote(urlsplit(url).path.lstrip("/"))
        if database.casefold() in _SYSTEM_SCHEMAS["mysql"]:
            raise fail(f"url: the database '{database}' is a system database and is never readable")
        schemas = (database,)
    else:
        schemas = ()

    max_concurrent = entry.get("max_concurrent", DEFAULT_MAX_CONCURRENT)
    if (
        not isinstance(max_concurrent, int)
        or isinstance(max_concurrent, bool)
        or not 1 <= max_concurrent <= MOST_CONCURRENT
    ):
        raise fail(
            f"max_concurrent must be a whole number from 1 to {MOST_CONCURRENT}, e.g. max_concurrent = 8"
        )

    descriptions = text("descriptions")
    described = None
    if descriptions is not None:
        described = (base / Path(descriptions).expanduser()).resolve()
        try:
            read_descriptions(described)
        except DescriptionsError as error:
            raise fail(f"descriptions: {error}") from None

    model = text("model")
    metric_model = None
    if model and model.strip():
        try:  # checked for this source's dialect only: its relation SELECTs run on its engine
            metric_model = load_model(model.strip(), base, (DIALECT_OF_KIND[kind],))
        except ModelError as error:
            raise fail(f"model: {error}") from None
    return Source(
        name=name,
        kind=kind,
        url=SecretStr(url),
        redacted_url=redact_url(url),
        description=(text("description") or "").strip(),
        tables=tables or ("*",),
        exclude=exclude,
        schemas=schemas,
        model=model.strip() if model else None,
        metric_model=metric_model,
        write_url=SecretStr(write_url) if write_url else None,
        max_concurrent=max_concurrent,
        descriptions=described,
    )


def _expand(
    value: str,
    env: Mapping[str, str],
    fail: Callable[[str], SourceConfigError],
    key: str,
    encode: Callable[[str], str] = str,
) -> str:
    """Replaces each ${NAME} with `encode` of the variable's value; `$${` writes a literal `${`."""
    out: list[str] = []
    position = 0
    while True:
        start = value.find("${", position)
        if start < 0:
            out.append(value[position:])
            return "".join(out)
        if start > 0 and value[start - 1] == "$":  # $${ is an escaped ${
            out.append(value[position : start - 1] + "${")
            position = start + 2
            continue
        end = value.find("}", start)
        variable = value[start + 2 : end] if end >= 0 else ""
        if end < 0 or not _VARIABLE.match(variable):
            raise fail(f"{key}: malformed environment reference; write ${{NAME}} (letters, digits, _)")
        if variable not in env:
            raise fail(f"{key}: environment variable {variable} is not set; set it or write the value")
        out.append(value[position:start] + encode(env[variable]))
        position = end + 1


def _expand_url(
    value: str, env: Mapping[str, str], fail: Callable[[str], SourceConfigError], key: str
) -> str:
    """Like `_expand`, but values put in the user:password part are percent-encoded, so a password from
    the environment may contain @ / : # ? and still parse (drivers decode it)."""
    scheme, separator, rest = value.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not separator or not at:
        return _expand(value, env, fail, key)
    userinfo = _expand(userinfo, env, fail, key, encode=lambda secret: quote(secret, safe=""))
    return f"{_expand(scheme, env, fail, key)}://{userinfo}@{_expand(host + slash + tail, env, fail, key)}"


def _check_url(url: str, fail: Callable[[str], SourceConfigError], key: str, base: Path) -> Kind:
    """The kind of `url`, after checking it names a host (databases) or an existing folder (files)."""
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    kind = _SCHEMES.get(scheme)
    if kind is None:
        shown = f"'{scheme[:20]}'" if scheme else "none"
        raise fail(
            f"{key}: unknown scheme {shown}; use postgresql://, mysql://, mariadb:// or files:///folder"
        )
    if not url[len(scheme) :].startswith("://"):
        raise fail(f"{key}: write {scheme}://...")
    if kind == "files":
        folder = _files_folder(url, base)
        if not folder.is_dir():
            raise fail(f"{key}: the folder does not exist or is not a folder; create it or fix the path")
        return kind
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise fail(
            f"{key}: malformed url (port must be a number; percent-encode @ / : in a password)"
        ) from None
    if not parts.hostname and "host" not in dict(parse_qsl(parts.query)):
        raise fail(f"{key}: names no host; write {scheme}://user:password@host:port/database")
    if kind == "mysql" and not parts.path.strip("/"):
        raise fail(f"{key}: names no database; write {scheme}://user:password@host:3306/database")
    if "/" in parts.path.strip("/"):
        raise fail(f"{key}: the path must be one database name")
    return kind


def _files_folder(url: str, base: Path) -> Path:
    """files:///srv/exports is absolute; files://exports and files://./exports are relative to `base`."""
    folder = Path(unquote(url.partition("://")[2])).expanduser()
    return (folder if folder.is_absolute() else base / folder).resolve()


def _glob_problem(pattern: str, kind: Kind) -> str | None:
    parts = pattern.split(".")
    if len(parts) > 2:
        return "write table or schema.table"
    if len(parts) == 2 and kind == "files":
        return "a files source's tables have no schema; write the table name"
    for part in parts:
        if not part:
            return "empty name"
        if not _GLOB_PART.match(part):
            return "use letters, digits, _ and the glob characters * ? [ ]"
        if part.count("[") != part.count("]") or re.search(r"\[[^\]]*\[", part) or re.search(r"\[!?\]", part):
            return "unbalanced or empty [ ]"
    return None


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name.casefold(), pattern.casefold())


def _matches_relation(pattern: str, schema: str, table: str) -> bool:
    """`table` globs match the table in any allowed schema; `schema.table` globs match both parts."""
    pattern_schema, dot, pattern_table = pattern.rpartition(".")
    if dot and not _matches(pattern_schema, schema):
        return False
    return _matches(pattern_table, table)


def _table_name(stem: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_") or "file"
    return name if name[0].isalpha() or name[0] == "_" else f"t_{name}"


def redact_url(url: str) -> str:
    """`url` with its password (and any password-like query option) replaced by ***: for logs and answers."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "***"
    if scheme.lower() == "files":  # the folder's name only: the server's paths are not for agents
        return f"files://.../{Path(unquote(rest)).name}"
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{host}" if colon else f"{user}@{host}"
    path, question, query = tail.partition("?")
    if question:
        options = [
            (name, "***" if name.lower() in _SECRET_PARAMETERS else value)
            for name, value in parse_qsl(query, keep_blank_values=True)
        ]
        tail = path + "?" + urlencode(options, safe="*")
    return f"{scheme}://{authority}{slash}{tail}"


OnChange = Callable[[Registry], Awaitable[None] | None]


async def watch(
    path: str | Path,
    on_change: OnChange,
    *,
    env: Mapping[str, str],
    current: Registry,
    main_url: str | None = None,
    interval: float = 1.0,
    wake: asyncio.Event | None = None,
) -> None:
    """Runs until cancelled: re-reads the sources file every `interval` seconds (and at once when `wake`
    is set: another instance said the sources changed) and calls `on_change` with the new registry when
    its contents changed and still validate.

    Polling the contents (not inotify) sees every kind of edit: in-place writes, editors that replace
    the file, Kubernetes ConfigMap symlink swaps, network filesystems. A bad edit (or a missing file)
    keeps `current` and logs one line, once per distinct bad contents.
    """
    path = Path(path)
    main = current.get() if MAIN in current else None
    if main_url:
        main = main_source(main_url)
    seen = current.digest
    while True:
        await _pause(interval, wake)
        try:
            text = await asyncio.to_thread(path.read_bytes)
        except OSError as error:
            if seen != "missing":
                log.warning("sources file unreadable (%s); keeping the current sources", error.strerror)
                seen = "missing"
            continue
        digest = await asyncio.to_thread(sources_digest, text, path.parent)
        if digest == seen:
            continue
        seen = digest
        try:
            registry = parse_sources(text, env, base=path.parent, main=main)
        except SourceConfigError as error:
            log.warning("sources file not reloaded, keeping the current sources: %s", error)
            continue
        if registry == current:
            current = registry
            continue
        current = registry
        log.info("sources reloaded: %s", ", ".join(f"{s.name} ({s.kind})" for s in registry))
        try:
            outcome = on_change(registry)
            if outcome is not None:
                await outcome
        except Exception:
            log.exception("applying reloaded sources failed")


async def _pause(interval: float, wake: asyncio.Event | None) -> None:
    """`interval` seconds, or less when `wake` is set (cleared here, so a wake during the read that
    follows is not lost: it ends the next pause at once)."""
    if wake is None:
        await asyncio.sleep(interval)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(interval):
            await wake.wait()
    wake.clear()
