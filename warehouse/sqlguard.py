"""SQL safety for agent queries, with PostgreSQL's own parser (pglast): one read-only SELECT, nothing else.

Pure functions, no I/O. This is one layer of several: the query also runs as a role that may only
read the analytics tables, in a READ ONLY transaction with a statement timeout, always rolled back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql, parser

from analytics.errors import InvalidInput, QueryRefused

MAX_QUERY_CHARS = 100_000
ALLOWED_TABLES = ("customers", "network_events", "revenue")
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_HOW_TO = "send one read-only SELECT (or WITH ... SELECT)"

# Functions refused by exact name (the last part of a possibly schema-qualified name), with the reason.
_DENIED_FUNCTIONS: dict[str, str] = {
    **dict.fromkeys(
        (
            "pg_read_file",
            "pg_read_binary_file",
            "pg_stat_file",
            "pg_ls_dir",
            "pg_current_logfile",
            "pg_file_write",
            "pg_file_rename",
            "pg_file_unlink",
            "pg_logdir_ls",
        ),
        "reads or writes server files",
    ),
    **dict.fromkeys(("loread", "lowrite"), "touches large objects"),
    **dict.fromkeys(
        (
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_signal_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_log_backend_memory_contexts",
            "pg_switch_wal",
            "pg_promote",
            "pg_wal_replay_pause",
            "pg_wal_replay_resume",
            "pg_backup_start",
            "pg_backup_stop",
            "pg_start_backup",
            "pg_stop_backup",
            "pg_create_restore_point",
            "pg_checkpoint",
            "pg_import_system_collations",
        ),
        "signals or controls the server",
    ),
    **dict.fromkeys(("set_config",), "changes settings or the role"),
    **dict.fromkeys(("pg_sleep_for", "pg_sleep_until"), "sleeps (use pg_sleep, bounded by the timeout)"),
    **dict.fromkeys(
        (
            "query_to_xml",
            "query_to_xmlschema",
            "query_to_xml_and_xmlschema",
            "cursor_to_xml",
            "cursor_to_xmlschema",
            "table_to_xml",
            "table_to_xmlschema",
            "table_to_xml_and_xmlschema",
            "schema_to_xml",
            "schema_to_xmlschema",
            "schema_to_xml_and_xmlschema",
            "database_to_xml",
            "database_to_xmlschema",
            "database_to_xml_and_xmlschema",
            "ts_stat",
            "ts_rewrite",
        ),
        "runs nested SQL the guard cannot check",
    ),
    **dict.fromkeys(
        ("pg_notify", "pg_current_xact_id", "pg_current_xact_id_if_assigned", "pg_export_snapshot"),
        "touches transactions or notifications",
    ),
    **dict.fromkeys(("nextval", "setval"), "changes a sequence"),
    **dict.fromkeys(("pg_logical_emit_message",), "writes to the write-ahead log"),
}
# Families refused by prefix.
_DENIED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("pg_read_", "reads server files"),
    ("pg_ls_", "lists server directories"),
    ("pg_file_", "writes server files"),
    ("lo_", "touches large objects"),
    ("pg_advisory", "takes advisory locks"),
    ("pg_try_advisory", "takes advisory locks"),
    ("dblink", "reaches other databases"),
    ("postgres_fdw", "reaches other databases"),
    ("txid_", "touches transactions"),
    ("pg_create_", "creates replication slots or restore points"),
    ("pg_drop_replication", "drops replication slots"),
    ("pg_copy_", "copies replication slots"),
    ("pg_replication_", "controls replication"),
    ("pg_logical_", "reads or writes logical replication"),
    ("pg_stat_reset", "resets statistics"),
    ("pg_stat_statements_reset", "resets statistics"),
)
# Catalogs with secrets or server internals, refused even though the query role could not read most of them.
_DENIED_RELATIONS: dict[str, str] = {
    **dict.fromkeys(
        ("pg_authid", "pg_shadow", "pg_user_mapping", "pg_user_mappings", "pg_auth_members"),
        "holds role secrets",
    ),
    **dict.fromkeys(("pg_largeobject", "pg_largeobject_metadata"), "holds large objects"),
    **dict.fromkeys(
        ("pg_hba_file_rules", "pg_ident_file_mappings", "pg_file_settings", "pg_config", "pg_statistic"),
        "exposes server internals",
    ),
}
_INTERNAL_SCHEMAS = ("mcp_internal",)
_READABLE = f"query {', '.join(ALLOWED_TABLES)}, sandbox.<table> (load_to_table) or information_schema"
# Relations whose contents change without a data load (which is what invalidates the cache):
# sandbox tables (load_to_table may replace one), catalogs and statistics views.
_UNCACHED_SCHEMAS = ("sandbox", "information_schema", "pg_catalog", "pg_toast")
# Results that change from call to call: never served from the cache.
_VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "now",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "timeofday",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "pg_sleep",
        "setseed",
        "pg_backend_pid",
        "inet_client_port",
    }
)

_STATEMENT_NAMES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "CopyStmt": "COPY",
    "VariableSetStmt": "SET/RESET",
    "VariableShowStmt": "SHOW",
    "DoStmt": "DO",
    "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE",
    "DeallocateStmt": "DEALLOCATE",
    "ListenStmt": "LISTEN",
    "UnlistenStmt": "UNLISTEN",
    "NotifyStmt": "NOTIFY",
    "VacuumStmt": "VACUUM/ANALYZE",
    "ExplainStmt": "EXPLAIN",
    "TransactionStmt": "a transaction command",
    "TruncateStmt": "TRUNCATE",
    "LockStmt": "LOCK",
    "CallStmt": "CALL",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "GrantStmt": "GRANT/REVOKE",
    "GrantRoleStmt": "GRANT/REVOKE of a role",
    "CreateRoleStmt": "CREATE ROLE",
    "AlterRoleStmt": "ALTER ROLE",
    "DropRoleStmt": "DROP ROLE",
    "DropStmt": "DROP",
    "DeclareCursorStmt": "DECLARE CURSOR",
    "FetchStmt": "FETCH",
    "ClosePortalStmt": "CLOSE",
    "CheckPointStmt": "CHECKPOINT",
    "DiscardStmt": "DISCARD",
    "LoadStmt": "LOAD",
    "ClusterStmt": "CLUSTER",
    "ReindexStmt": "REINDEX",
    "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
    "CreateFunctionStmt": "CREATE FUNCTION",
    "ViewStmt": "CREATE VIEW",
    "RuleStmt": "CREATE RULE",
    "CreateExtensionStmt": "CREATE EXTENSION",
    "CreateStmt": "CREATE TABLE",
    "AlterTableStmt": "ALTER TABLE",
    "IndexStmt": "CREATE INDEX",
    "CreateSchemaStmt": "CREATE SCHEMA",
    "CreateSeqStmt": "CREATE SEQUENCE",
    "CreateTrigStmt": "CREATE TRIGGER",
    "AlterSystemStmt": "ALTER SYSTEM",
    "AlterDatabaseSetStmt": "ALTER DATABASE",
    "AlterRoleSetStmt": "ALTER ROLE",
    "CreatedbStmt": "CREATE DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "CommentStmt": "COMMENT ON",
    "SecLabelStmt": "SECURITY LABEL",
    "CreateForeignServerStmt": "CREATE SERVER",
    "CreateUserMappingStmt": "CREATE USER MAPPING",
    "ImportForeignSchemaStmt": "IMPORT FOREIGN SCHEMA",
}


@dataclass(frozen=True)
class CheckedQuery:
    """A query the guard accepted: its text without a trailing semicolon, and what it touches."""

    sql: str
    relations: tuple[str, ...]
    volatile: bool

    @property
    def cacheable(self) -> bool:
        """True when the answer can be served from the cache until the next data load."""
        return not self.volatile and not any(_changes_between_loads(name) for name in self.relations)


def _changes_between_loads(relation: str) -> bool:
    schema, _, name = relation.rpartition(".")
    return schema in _UNCACHED_SCHEMAS or name.startswith("pg_")


@dataclass(frozen=True)
class BoundQuery:
    """Agent SQL with `%(name)s` placeholders turned into `$n`; `names[i]` is bound to `$i+1`."""

    sql: str
    names: tuple[str, ...]
    # (offset in the bound text, characters to add to get back to the agent's text), ascending
    shifts: tuple[tuple[int, int], ...] = ()

    def original_position(self, position: int) -> int:
        """Map a 0-based character position in the bound text back to the agent's text."""
        delta = 0
        for offset, shift in self.shifts:
            if position < offset:
                break
            delta = shift
        return position + delta

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        return [parameters[name] for name in self.names]


def _scan(sql: str, origin: Callable[[int], int] | None = None) -> list[Any]:
    try:
        return list(parser.scan(sql))
    except parser.ParseError as error:
        raise _syntax_error(error, origin) from None


def _syntax_error(error: parser.ParseError, origin: Callable[[int], int] | None) -> InvalidInput:
    message, index = str(error.args[0]), error.args[1] if len(error.args) > 1 else None
    if isinstance(index, int) and origin is not None:
        index = origin(index)
    if not message.startswith("syntax error"):
        message = f"syntax error: {message}"
    return InvalidInput(f"{message}{_at(index)}; fix the SQL and retry")


def _at(index: int | None) -> str:
    return f" (character {index + 1})" if isinstance(index, int) and index >= 0 else ""


def bind_placeholders(sql: str, parameters: Mapping[str, Any]) -> BoundQuery:
    """Replace `%(name)s` placeholders, found by PostgreSQL's own scanner, with `$n` positions.

    Text inside string literals and quoted identifiers is never touched. Every placeholder needs a
    parameter and every parameter a placeholder; a name used twice is bound once.
    """
    _check_text(sql)
    for name in parameters:
        if not _PARAMETER_NAME.match(name):
            raise InvalidInput(
                f"parameter name '{name[:40]}' is not valid; use letters, digits and _ (e.g. min_age)"
            )
    tokens = _scan(sql)
    pieces: list[str] = []
    names: list[str] = []
    shifts: list[tuple[int, int]] = []
    cursor = 0  # next unread character of sql
    bound_length = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.name == "PARAM":
            raise InvalidInput(
                f"positional parameter '{sql[token.start : token.end + 1]}'{_at(token.start)} is not "
                "supported; write %(name)s and pass parameters={'name': value}"
            )
        window = tokens[i : i + 5]
        if (
            len(window) == 5
            and [t.name for t in window[:2]] + [window[3].name] == ["ASCII_37", "ASCII_40", "ASCII_41"]
            and (window[2].name == "IDENT" or window[2].kind != "NO_KEYWORD")
            and _PARAMETER_NAME.match(sql[window[2].start : window[2].end + 1])
            and sql[window[4].start : window[4].end + 1] == "s"
            and all(window[k].end + 1 == window[k + 1].start for k in range(4))
        ):
            name = sql[window[2].start : window[2].end + 1]
            if name not in parameters:
                given = ", ".join(sorted(parameters)) or "none"
                raise InvalidInput(
                    f"placeholder %({name})s{_at(token.start)} has no value in parameters "
                    f"(given: {given}); add '{name}' to parameters"
                )
            if name not in names:
                names.append(name)
            marker = f"${names.index(name) + 1}"
            pieces.append(sql[cursor : token.start])
            bound_length += token.start - cursor
            pieces.append(marker)
            bound_length += len(marker)
            cursor = window[4].end + 1
            shifts.append((bound_length, cursor - bound_length))
            i += 5
            continue
        if token.name == "ASCII_37" and i + 1 < len(tokens) and tokens[i + 1].start == token.end + 1:
            follower = sql[tokens[i + 1].start : tokens[i + 1].end + 1]
            if follower in ("s", "d") or tokens[i + 1].name == "ASCII_40":
                raise InvalidInput(
                    f"malformed placeholder{_at(token.start)}; write %(name)s with a name in "
                    "parameters (for the modulo operator put spaces around %)"
                )
        i += 1
    pieces.append(sql[cursor:])
    unused = sorted(set(parameters) - set(names))
    if unused:
        raise InvalidInput(
            f"parameters {', '.join(unused)} are not used by any %(name)s placeholder in the query; "
            "remove them or use them"
        )
    return BoundQuery("".join(pieces), tuple(names), tuple(shifts))


def _check_text(sql: str) -> None:
    if not sql.strip():
        raise InvalidInput(f"the query is empty; {_HOW_TO}")
    if len(sql) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS:,} characters; shorten it")
    if "\x00" in sql:
        raise InvalidInput("the query contains a NUL character; remove it")


def validate_select(sql: str, origin: Callable[[int], int] | None = None) -> CheckedQuery:
    """Accept exactly one read-only SELECT (or WITH ... SELECT) or raise a one-line error saying why not.

    `origin` maps a character position in `sql` back to the agent's text (after placeholder binding).
    """
    _check_text(sql)
    tokens = _scan(sql, origin)
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            raise QueryRefused(
                f"comments are not allowed{_at(token.start)}; remove '--' and '/* */' comments"
            )
    semicolons = [t for t in tokens if t.name == "ASCII_59"]
    if semicolons and (len(semicolons) > 1 or semicolons[0] is not tokens[-1]):
        extra = semicolons[0] if semicolons[0] is not tokens[-1] else semicolons[1]
        raise QueryRefused(
            f"more than one statement{_at(extra.start)}; {_HOW_TO} (a single trailing ';' is fine)"
        )
    text = sql[: semicolons[0].start] if semicolons else sql
    try:
        statements = parse_sql(text)
    except parser.ParseError as error:
        raise _syntax_error(error, origin) from None
    if len(statements) != 1:
        raise QueryRefused(f"expected exactly one statement, got {len(statements)}; {_HOW_TO}")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        kind = type(statement).__name__
        what = _STATEMENT_NAMES.get(kind, kind.removesuffix("Stmt").upper())
        raise QueryRefused(f"only SELECT queries are allowed, not {what}; {_HOW_TO}")
    relations: list[str] = []
    volatile = False
    for node in _walk(statement):
        if isinstance(node, ast.SelectStmt):
            if node.intoClause is not None:
                raise QueryRefused("SELECT INTO creates a table and is not allowed; drop the INTO clause")
            if node.lockingClause:
                raise QueryRefused(
                    "locking clauses (FOR UPDATE / FOR SHARE) are not allowed; drop the FOR ... clause"
                )
        elif isinstance(node, ast.CommonTableExpr):
            if not isinstance(node.ctequery, ast.SelectStmt):
                kind = type(node.ctequery).__name__
                what = _STATEMENT_NAMES.get(kind, kind.removesuffix("Stmt").upper())
                raise QueryRefused(
                    f"WITH query '{node.ctename}' is a data-modifying {what}; only SELECT is allowed in WITH"
                )
        elif isinstance(node, ast.FuncCall):
            name = _last_name(node.funcname)
            _check_function(name)
            volatile = volatile or name in _VOLATILE_FUNCTIONS
        elif isinstance(node, ast.SQLValueFunction):
            volatile = True  # current_timestamp, current_user and friends
        elif isinstance(node, ast.RangeVar):
            relation = (node.relname or "").lower()
            schema = (node.schemaname or "").lower()
            if schema in _INTERNAL_SCHEMAS or relation in _INTERNAL_SCHEMAS:
                raise QueryRefused(f"schema '{schema or relation}' is internal to the server; {_READABLE}")
            if relation in _DENIED_RELATIONS:
                raise QueryRefused(
                    f"catalog '{relation}' {_DENIED_RELATIONS[relation]} and may not be queried; {_READABLE}"
                )
            relations.append(f"{schema}.{relation}" if schema else relation)
    return CheckedQuery(text.rstrip(), tuple(dict.fromkeys(relations)), volatile)


def _check_function(name: str) -> None:
    reason = _DENIED_FUNCTIONS.get(name)
    if reason is None:
        reason = next((why for prefix, why in _DENIED_PREFIXES if name.startswith(prefix)), None)
    if reason is not None:
        raise QueryRefused(f"function {name}() is not allowed: it {reason}; remove it from the query")


def _last_name(names: Sequence[Any] | None) -> str:
    if not names:
        return ""
    last = names[-1]
    return str(getattr(last, "sval", last)).lower()


def _walk(node: Any) -> Iterator[ast.Node]:
    """Every AST node under `node`, depth first (the tree is small; recursion depth is bounded by the parser)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Node):
            yield current
            for attribute in current.__slots__:
                value = getattr(current, attribute, None)
                if isinstance(value, (ast.Node, tuple, list)):
                    stack.append(value)
        elif isinstance(current, (tuple, list)):
            stack.extend(current)


def normalised(sql: str) -> str:
    """The query with spacing and keyword case made canonical (the cache key); literals are untouched."""
    tokens = _scan(sql)
    words = []
    for token in tokens:
        text = sql[token.start : token.end + 1]
        if token.kind != "NO_KEYWORD" or (token.name == "IDENT" and not text.startswith('"')):
            text = text.lower()
        words.append(text)
    if words and words[-1] == ";":
        words.pop()
    return " ".join(words)
