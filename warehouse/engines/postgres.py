"""PostgreSQL sources other than the built-in database: an agent's SELECT guarded, then run read-only
with bounds on a pooled connection of the operator's read-only account.

The boundary is that account, which should hold nothing but SELECT on the source's tables
(docs/sources.md); one that is a superuser, a replication or BYPASSRLS role or a member of a predefined
pg_* role is refused at start. Layers on top: the pglast guard (warehouse.sqlguard: one SELECT, no
comments, only the server's own built-in functions minus those that run SQL or touch server state),
the relation rule below (only the source's allowed relations, resolved as PostgreSQL resolves them
against the source's schemas; catalogs and other schemas refused), a READ ONLY transaction with
statement, lock and idle timeouts and the source's schemas as the search path, always rolled back,
and the same bounded fetch and value cutting as the built-in database (warehouse.query.fetch_checked).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import cachetools
from pglast import ast, parse_sql

from core.errors import Forbidden, InvalidInput, QueryRefused, Timeout, Unavailable
from warehouse import sql as named_sql
from warehouse.db import CONNECTION_ERRORS, close_pool
from warehouse.descriptions import Descriptions, table_comments
from warehouse.engines import GuardedStatement, RelationRules, Table
from warehouse.profiles import (
    PROFILE_TIMEOUT,
    aggregate_sql,
    read_aggregate,
    table_profile,
    top_values_sql,
    wants_top_values,
)
from warehouse.query import (
    GUARD_CACHE_CHARS,
    GUARD_CACHE_SIZE,
    IDLE_GRACE_SECONDS,
    Column,
    QueryResult,
    check_timeout,
    fetch_checked,
    in_guard_thread,
    query_hash,
)
from warehouse.sqlguard import (
    MAIN_READABLE,  # the built-in database's tables, in refusals
    BoundQuery,
    FunctionPolicy,
    bind_placeholders,
    validate_select,
)

RELATIONS_SQL = """
SELECT n.nspname::text AS schema, c.relname::text AS name,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::int8 END AS estimate
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY 1, 2
"""
COLUMNS_SQL = """
SELECT a.attname::text AS name,
       CASE WHEN t.typcategory = 'A' THEN e.typname::text || '[]' ELSE t.typname::text END AS type
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type AS e ON e.oid = t.typelem
WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

KEYS_SQL = """
SELECT a.attname::text AS name, CASE WHEN i.indisprimary THEN 'primary' ELSE 'unique' END AS key
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisunique AND i.indnatts = 1
ORDER BY i.indisprimary
"""
FOREIGN_KEYS_SQL = """
SELECT a.attname::text AS name, rn.nspname::text AS schema, rc.relname::text AS tbl, ra.attname::text AS col
FROM pg_catalog.pg_constraint AS c
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_catalog.pg_class AS rc ON rc.oid = c.confrelid
JOIN pg_catalog.pg_namespace AS rn ON rn.oid = rc.relnamespace
JOIN pg_catalog.pg_attribute AS ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
  AND c.conrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass
"""

COMMENTS_SQL = """
SELECT n.nspname::text AS schema, c.relname::text AS name, NULL::text AS column_name,
       obj_description(c.oid, 'pg_class') AS comment
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
UNION ALL
SELECT n.nspname::text, c.relname::text, a.attname::text, col_description(c.oid, a.attnum)
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
"""


@dataclass(frozen=True)
class PostgresStatement(GuardedStatement):
    """A guarded statement with its placeholder binding (error positions map back to the agent's text)."""

    bound: BoundQuery | None = None


@dataclass(frozen=True)
class _Catalog:
    """The source's relations as read from its server: where each unqualified name resolves, what is allowed."""

    schemas: tuple[str, ...]
    resolves: Mapping[str, str]  # table name -> the first of `schemas` holding it (search path order)
    allowed: frozenset[tuple[str, str]]  # (schema, table) the source may read

    def display(self, schema: str, table: str) -> str:
        """A relation as the agent names it: bare in the first schema, else schema-qualified."""
        return table if schema == self.schemas[0] else f"{schema}.{table}"

    def ordered(self) -> list[tuple[str, str]]:
        """The allowed relations in search path order, then by name."""
        order = {schema: index for index, schema in enumerate(self.schemas)}
        return sorted(self.allowed, key=lambda key: (order.get(key[0], len(order)), key[1]))

    def names(self, most: int = 20) -> list[str]:
        """The allowed relations as the agent names them, at most `most` (then how many more)."""
        names = [self.display(schema, table) for schema, table in self.ordered()]
        return names if len(names) <= most else [*names[:most], f"... ({len(names) - most} more)"]


class PostgresEngine:
    """One PostgreSQL source: `url` is postgresql://user[:password]@host[:port]/database."""

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        name: str = "source",
        schemas: Sequence[str] = ("public",),
        rules: RelationRules | None = None,
        pool_size: int = 4,
        allowed_functions: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.schemas = tuple(schemas) or ("public",)
        self.rules = rules or RelationRules()
        self._url = url
        self.pool_size = pool_size  # connections at most
        self._pool: asyncpg.Pool | None = None
        self.allowed_functions = allowed_functions  # QUERY_ALLOWED_FUNCTIONS, as for the built-in database
        self.policy = FunctionPolicy()
        self.role = ""
        self._catalog = _Catalog(self.schemas, {}, frozenset())
        # Accepted queries' verdicts, with the catalog they were checked against (see `guarded`).
        self._verdicts: cachetools.LRUCache[tuple[Any, ...], tuple[_Catalog, PostgresStatement]] = (
            cachetools.LRUCache(GUARD_CACHE_SIZE)
        )

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool, refuse an account that can do more than read, read the built-in functions
        and the allowed relations."""
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self.pool_size,
                timeout=10,
                command_timeout=60,
                server_settings={"default_transaction_read_only": "on", "application_name": "analytics-mcp"},
            )
        except (asyncpg.PostgresError, *CONNECTION_ERRORS) as error:
            raise self._unavailable(error) from None
        try:
            async with self._pool.acquire() as conn:
                check = await conn.fetchrow(named_sql.load("query_role_check"), timeout=10)
                builtin = await conn.fetch(named_sql.load("builtin_functions"), timeout=10)
            self.role = str(check["role_name"])
            predefined = list(check["predefined_roles"])
            if check["privileged"] or predefined:
                what = (
                    "a superuser, replication or BYPASSRLS role"
                    if check["privileged"]
                    else "a member of " + ", ".join(predefined)
                )
                raise Forbidden(
                    f"source '{self.name}' logs in as {self.role}, {what}; give it an account that can "
                    "only read (a plain role with SELECT on the source's tables)"
                )
            self.policy = FunctionPolicy(
                frozenset(row["name"] for row in builtin), self.allowed_functions, search_path=self.schemas
            )
            await self.refresh()
        except BaseException as error:
            await self.close()
            if isinstance(error, (asyncpg.PostgresError, *CONNECTION_ERRORS)):
                raise self._unavailable(error) from None
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await close_pool(pool)

    async def refresh(self) -> list[Table]:
        """Read the source's relations again (after the operator adds one)."""
        async with self._connection() as conn:
            rows = await conn.fetch(RELATIONS_SQL, list(self.schemas), timeout=10)
        order = {schema: index for index, schema in enumerate(self.schemas)}
        resolves: dict[str, str] = {}
        for row in sorted(rows, key=lambda row: order[row["schema"]]):
            resolves.setdefault(row["name"], row["schema"])
        allowed = frozenset(
            (row["schema"], row["name"]) for row in rows if self.rules.allows(row["schema"], row["name"])
        )
        catalog = _Catalog(self.schemas, resolves, allowed)
        if catalog != self._catalog:  # the same relations keep the same catalog: verdicts stay valid
            self._catalog = catalog
        estimates = {(row["schema"], row["name"]): row["estimate"] for row in rows}
        return [
            Table(self._catalog.display(schema, table), estimates[(schema, table)])
            for schema, table in self._catalog.ordered()
        ]

    # --- catalog --------------------------------------------------------------------------------

    async def tables(self) -> list[Table]:
        try:
            return await self.refresh()
        except (asyncpg.PostgresError, *CONNECTION_ERRORS) as error:
            raise self._unavailable(error) from None

    async def columns(self, table: str) -> list[Column]:
        schema, _, name = table.rpartition(".")
        key = (schema or self._catalog.resolves.get(name, ""), name)
        if key not in self._catalog.allowed:
            raise InvalidInput(
                f"table '{table}' is not part of source '{self.name}'; read schema://{self.name}"
            )
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(COLUMNS_SQL, *key, timeout=10)
        except (asyncpg.PostgresError, *CONNECTION_ERRORS) as error:
            raise self._unavailable(error) from None
        return [Column(row["name"], row["type"]) for row in rows]

    async def comments(self) -> Descriptions:
        """The COMMENT ON text of the allowed relations and their columns, by table as the agent names it."""
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(COMMENTS_SQL, list(self.schemas), timeout=10)
        except (asyncpg.PostgresError, *CONNECTION_ERRORS) as error:
            raise self._unavailable(error) from None
        return table_comments(
            (self._catalog.display(row["schema"], row["name"]), row["column_name"], row["comment"])
            for row in rows
            if (row["schema"], row["name"]) in self._catalog.allowed
        )

    async def data_version(self) -> str | None:
        return None  # PostgreSQL dates no table's last change: answers are not cached

    async def profile(self, table: str, sample_rows: int) -> dict[str, Any]:
        """The table's profile: one aggregate over it (over a random sample of about `sample_rows` rows
        when it has more) and a top-values query per repeating column, in a READ ONLY transaction with
        a statement timeout, rolled back."""
        columns = [(column.name, column.type) for column in await self.columns(table)]
        schema, _, name = table.rpartition(".")
        key = (schema or self._catalog.resolves.get(name, ""), name)
        relation = f"{_quoted(key[0])}.{_quoted(key[1])}"
        try:
            async with self._connection() as conn:
                await conn.execute(self._begin(PROFILE_TIMEOUT))
                try:
                    row_count = int(await conn.fetchval(f"SELECT count(*) FROM {relation}"))
                    measured = relation
                    if row_count > sample_rows:
                        fraction = sample_rows / row_count
                        measured = (
                            f"(SELECT * FROM {relation} WHERE random() < {fraction:.9f}) AS amcp_sample"
                        )
                    row = await conn.fetchrow(
                        aggregate_sql(_quoted, columns, measured, bool_range=("bool_and", "bool_or"))
                    )
                    sample_size, stats = read_aggregate(tuple(row), columns)
                    for column in stats:
                        if wants_top_values(column):
                            found = await conn.fetch(top_values_sql(_quoted, column.name, measured))
                            column.top_values = [(found_row[0], int(found_row[1])) for found_row in found]
                    keys = {row["name"]: row["key"] for row in await conn.fetch(KEYS_SQL, *key)}
                    references = {
                        row["name"]: f"{self._catalog.display(row['schema'], row['tbl'])}.{row['col']}"
                        for row in await conn.fetch(FOREIGN_KEYS_SQL, *key)
                        if (row["schema"], row["tbl"]) in self._catalog.allowed
                    }
                finally:
                    await conn.execute("ROLLBACK")
        except asyncpg.QueryCanceledError:
            raise Timeout(
                f"profiling '{table}' took longer than {PROFILE_TIMEOUT:g} s; it is retried on refresh_source"
            ) from None
        except (asyncpg.PostgresError, *CONNECTION_ERRORS) as error:
            raise self._unavailable(error) from None
        for column in stats:
            column.key = keys.get(column.name)
            column.references = references.get(column.name)
        return table_profile(table, row_count, sample_size, stats)

    # --- queries --------------------------------------------------------------------------------

    async def guarded(self, sql: str, parameters: Mapping[str, Any]) -> GuardedStatement:
        """The verdict depends only on the text, the parameter names, the function policy (set at
        start) and the catalog, so an accepted query is remembered under the first two while the
        catalog is the one it was checked against (agents repeat a text with new values: no parse);
        refusals are not remembered."""
        catalog, key = self._catalog, (sql, tuple(parameters))
        remembered = self._verdicts.get(key) if len(sql) <= GUARD_CACHE_CHARS else None
        if remembered is not None and remembered[0] is catalog:
            return remembered[1]
        statement = await in_guard_thread(
            guard_postgres, sql, dict(parameters), self.policy, catalog, self.name
        )
        if len(sql) <= GUARD_CACHE_CHARS:
            self._verdicts[key] = (catalog, statement)
        return statement

    async def run(
        self,
        statement: GuardedStatement,
        parameters: Mapping[str, Any],
        *,
        timeout: float = 30,
        max_rows: int = 1_000,
        max_bytes: int = 1_000_000,
    ) -> QueryResult:
        """Run a guarded SELECT read-only; at most `max_rows` rows and about `max_bytes` bytes come back."""
        started = time.perf_counter()
        check_timeout(timeout)
        bound = statement.bound if isinstance(statement, PostgresStatement) else None
        if bound is None:  # not ours: guard it again rather than trust it
            statement = await self.guarded(statement.sql, parameters)
            assert isinstance(statement, PostgresStatement) and statement.bound is not None
            bound = statement.bound
        try:
            async with self._connection() as conn:
                columns, rows, truncated_by, cut = await fetch_checked(
                    conn,
                    self._begin(timeout),
                    bound,
                    statement.sql,
                    parameters,
                    timeout=timeout,
                    max_rows=max_rows,
                    max_bytes=max_bytes,
                    tables=self._catalog.names(),
                    schema_uri=f"schema://{self.name}",
                )
        except CONNECTION_ERRORS as error:
            raise self._unavailable(error) from None
        return QueryResult.fetched(
            columns,
            rows,
            truncated_by,
            cut,
            started=started,
            query_hash=statement.hash,
            volatile=statement.volatile,
            relations=statement.relations,
            max_bytes=max_bytes,
        )

    def _begin(self, timeout: float) -> str:
        milliseconds = max(1, int(timeout * 1000))
        path = ", ".join(_quoted(schema) for schema in self.schemas)
        return (
            named_sql.load("query_begin").format(
                statement_timeout_ms=milliseconds, idle_timeout_ms=milliseconds + IDLE_GRACE_SECONDS * 1000
            )
            + f"\nSET LOCAL search_path = {path};\n"
        )

    def _connection(self) -> Any:
        if self._pool is None:
            raise Unavailable(f"source '{self.name}' is not started; retry in a moment")
        return self._pool.acquire(timeout=10)

    def _unavailable(self, error: BaseException) -> Unavailable:
        if isinstance(
            error, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidCatalogNameError
        ):
            return Unavailable(
                f"source '{self.name}': the server refused the login or the database "
                f"({type(error).__name__}); check its account"
            )
        return Unavailable(
            f"source '{self.name}' is unreachable ({type(error).__name__}); check that its server is up "
            "and retry"
        )


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def guard_postgres(
    sql: str, parameters: Mapping[str, Any], policy: FunctionPolicy, catalog: _Catalog, source: str
) -> PostgresStatement:
    """The built-in guard (one SELECT, built-in functions only) plus the source's relation rule."""
    bound = bind_placeholders(sql, parameters)
    try:
        checked = validate_select(bound.sql, bound.original_position, policy=policy)
    except QueryRefused as error:
        message = str(error)
        if not message.endswith(MAIN_READABLE):  # a catalog refused: say what this source may read instead
            raise
        readable = ", ".join(catalog.names()) or "(none)"
        raise QueryRefused(
            f"{message.removesuffix(MAIN_READABLE)}source '{source}' may read only {readable}"
        ) from None
    statement = parse_sql(checked.sql)[0].stmt
    relations: list[str] = []
    for schema, table in _read_relations(statement, frozenset()):
        relations.append(_allowed_relation(schema, table, catalog, source))
    return PostgresStatement(
        sql=checked.sql,
        names=bound.names,
        relations=tuple(dict.fromkeys(relations)),
        volatile=checked.volatile,
        canonical=checked.canonical,
        hash=query_hash(sql),
        bound=bound,
    )


def _allowed_relation(schema: str | None, table: str, catalog: _Catalog, source: str) -> str:
    """`schema.table` if the source may read it (resolved as the search path resolves it), else refused."""
    readable = ", ".join(catalog.names()) or "(none)"
    if schema is None:
        if table.startswith("pg_"):  # pg_catalog comes first on every search path
            raise QueryRefused(f"'{table}' is a system catalog; source '{source}' may read only {readable}")
        resolved = catalog.resolves.get(table)
        if resolved is None:
            raise QueryRefused(
                f"table '{table}' is not part of source '{source}'; it may read only {readable}"
            )
        schema = resolved
    if (schema, table) not in catalog.allowed:
        raise QueryRefused(
            f"relation '{schema}.{table}' is not part of source '{source}'; it may read only {readable}"
        )
    return f"{schema}.{table}"


def _read_relations(node: Any, ctes: frozenset[str]) -> list[tuple[str | None, str]]:
    """(schema or None, name) of every table a statement reads, skipping references to its own WITH
    queries where they are in scope (a WITH query's name reaches only its own SELECT and what is nested
    in it; a later sibling, or every one under WITH RECURSIVE)."""
    found: list[tuple[str | None, str]] = []
    stack: list[tuple[Any, frozenset[str]]] = [(node, ctes)]
    while stack:
        current, scope = stack.pop()
        if isinstance(current, (tuple, list)):
            stack.extend((item, scope) for item in current)
            continue
        if not isinstance(current, ast.Node):
            continue
        if isinstance(current, ast.RangeVar):
            if current.catalogname:
                raise QueryRefused(
                    "tables of another database (database.schema.table) may not be read; name the table "
                    "as schema.table or table"
                )
            name = current.relname or ""
            if current.schemaname or name not in scope:
                found.append((current.schemaname, name))
            continue
        if isinstance(current, ast.SelectStmt) and current.withClause is not None:
            clause = current.withClause
            names = [cte.ctename for cte in clause.ctes or ()]
            inner = scope | frozenset(names)
            for index, cte in enumerate(clause.ctes or ()):
                visible = inner if clause.recursive else scope | frozenset(names[:index])
                stack.append((cte.ctequery, visible))
            for attribute in current.__slots__:  # type: ignore[attr-defined]  # pglast's nodes declare them
                if attribute != "withClause":
                    stack.append((getattr(current, attribute, None), inner))
            continue
        for attribute in current.__slots__:  # type: ignore[attr-defined]
            stack.append((getattr(current, attribute, None), scope))
    return found
