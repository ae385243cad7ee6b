"""SQL safety for agent queries, with PostgreSQL's own parser (pglast): one read-only SELECT, nothing else.

Pure functions, no I/O. This is one layer of several, and not the boundary: the query runs on a
connection that logs in as a role that may only read the analytics and sandbox tables, in a READ ONLY
transaction with a statement timeout, always rolled back. Functions are allowed by what they are
(`FunctionPolicy`): PostgreSQL's own built-ins, read from the catalog at start-up and handed in as data,
minus those that run SQL text or touch server state, plus an operator's allowlist.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql, parser
from pglast.stream import RawStream

from core.errors import InvalidInput, QueryRefused

MAX_QUERY_CHARS = 50_000
# Bounds on what the parser is given, checked first with PostgreSQL's scanner (flat, not recursive):
# pglast's parser recurses in C and builds a Python object per node, so a 48 KB `SELECT 1+1+...`
# overflowed the C stack and killed the server, and 20k terms took seconds. Within these bounds the
# worst query is guarded (scanned, parsed, checked, deparsed) in ~40-70 ms of CPU, off the event loop.
MAX_QUERY_TOKENS = 2_200
MAX_PARENTHESES = 100  # nesting of ( ) and [ ], counted before parsing
MAX_DEPTH = 100  # nesting of the parsed statement's nodes (a + b + c is 3 deep), checked before any recursion
# pglast maps each token and node position back from UTF-8 with a linear search over the text's
# multi-byte characters: tokens x non-ASCII bytes is bounded (it took 4 s for 5,000 tokens + 20,000 Ω).
_NON_ASCII_WORK = 2_000_000
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# A dollar-quote tag ($tag$) with a non-ASCII character, wherever it is (tags are letters, digits, _).
_NON_ASCII_TAG = re.compile(r"\$[A-Za-z0-9_]*[^\x00-\x7f][A-Za-z0-9_\x80-\U0010ffff]*\$")
ALLOWED_TABLES = ("customers", "network_events", "revenue")
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# A character that continues an identifier or a number in PostgreSQL (letters, digits, _, $, non-ASCII).
_WORD_CHARACTER = re.compile(r"[\w$\x80-\U0010ffff]")
_HOW_TO = "send one read-only SELECT (or WITH ... SELECT)"

# Built-in functions refused by exact name (the last part of a possibly schema-qualified name), with
# the reason: they run SQL text the guard cannot see, or read or change server state. Every function
# that is not a built-in is refused anyway unless an operator allows it (FunctionPolicy).
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
    **dict.fromkeys(
        (
            "pg_lock_status",
            "pg_prepared_xact",
            "pg_blocking_pids",
            "pg_safe_snapshot_blocking_pids",
            "pg_isolation_test_session_is_blocked",
            "pg_get_replication_slots",
            "pg_get_backend_memory_contexts",
            "pg_get_shmem_allocations",
            "pg_show_all_file_settings",
            "pg_hba_file_rules",
            "pg_ident_file_mappings",
            "pg_notification_queue_usage",
            "pg_current_wal_lsn",
            "pg_current_wal_insert_lsn",
            "pg_current_wal_flush_lsn",
            "pg_last_committed_xact",
        ),
        "reveals server activity",
    ),
    **dict.fromkeys(
        (
            "brin_summarize_new_values",
            "brin_summarize_range",
            "brin_desummarize_range",
            "gin_clean_pending_list",
        ),
        "changes an index",
    ),
    **dict.fromkeys(("pg_nextoid", "pg_stop_making_pinned_objects"), "changes the catalog"),
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
    ("pg_stat_", "reveals server activity"),  # pg_stat_get_*, pg_stat_statements, pg_stat_clear_snapshot
    ("pg_control_", "reveals server internals"),
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
    **dict.fromkeys(
        (
            "pg_locks",
            "pg_prepared_xacts",
            "pg_replication_slots",
            "pg_replication_origin_status",
            "pg_backend_memory_contexts",
            "pg_shmem_allocations",
        ),
        "reveals server activity",
    ),
}
# Statistics views that show what every session does (pg_stat_activity, pg_stat_all_tables, ...,
# pg_statio_*, pg_stat_statements). Not pg_stats: per-column statistics of tables the role may read.
_ACTIVITY_RELATION_PREFIXES = ("pg_stat_", "pg_statio_")
_INTERNAL_SCHEMAS = ("mcp_internal",)
# What the built-in database lets a query read, said in refusals (other sources say their own).
MAIN_READABLE = f"query {', '.join(ALLOWED_TABLES)}, sandbox.<table> (load_to_table) or information_schema"
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
class FunctionPolicy:
    """Which functions an agent's query may call, by what they are rather than by a list of bad names.

    `builtin`: names of the functions PostgreSQL itself ships in pg_catalog (OIDs below
    FirstNormalObjectId, 16384), read once from the catalog at start-up (warehouse/db.py). `allowed`:
    the operator's QUERY_ALLOWED_FUNCTIONS, each `name` or `schema.name`. A call is allowed when it is
    allowlisted, or when it names a built-in (unqualified or as pg_catalog.name) that is not refused for
    running SQL text or touching server state. Names compare exactly as PostgreSQL resolves them
    (unquoted names arrive folded by the parser; a quoted "Lower" is not lower).
    """

    builtin: frozenset[str] = frozenset()
    allowed: frozenset[str] = frozenset()
    # The schemas an unqualified call resolves through after pg_catalog (a source's `schemas`); None: the
    # built-in database's query role (pg_catalog, then public, which has no schema of its own to shadow).
    search_path: tuple[str, ...] | None = None

    def check(self, names: Sequence[str]) -> None:
        """Raise QueryRefused naming the function unless a call to `names` (its qualified name) is allowed."""
        name = names[-1]
        schema = names[-2] if len(names) > 1 else None
        qualified = f"{schema}.{name}" if schema else name
        if (
            name in self.allowed
            or qualified in self.allowed
            or (schema is None and self._allowed_in_some_schema(name))
        ):
            return
        if schema is not None and schema != "pg_catalog":
            raise QueryRefused(
                f"function {qualified}() is not allowed: only built-in functions (pg_catalog) may be called "
                "(an operator may allow it with QUERY_ALLOWED_FUNCTIONS); remove it"
            )
        reason = _DENIED_FUNCTIONS.get(name) or next(
            (why for prefix, why in _DENIED_PREFIXES if name.startswith(prefix)), None
        )
        if reason is not None:
            raise QueryRefused(f"function {name}() is not allowed: it {reason}; remove it from the query")
        if name not in self.builtin:
            if not self.builtin:
                raise QueryRefused(
                    f"function {name}() is not allowed: the server has not read PostgreSQL's built-in "
                    "functions yet; retry once it has started"
                )
            raise QueryRefused(
                f"function {name}() is not allowed: it is not a built-in function (an operator may allow "
                "it with QUERY_ALLOWED_FUNCTIONS); remove it"
            )

    def _allowed_in_some_schema(self, name: str) -> bool:
        # `schema.name` allowlisted: the unqualified call resolves through the query role's search path
        # (pg_catalog, then public), which has no schema of its own to shadow it. On a source searching
        # several schemas an earlier one could hold another `name`: only its first schema's entry counts.
        if self.search_path is not None:
            return bool(self.search_path) and f"{self.search_path[0]}.{name}" in self.allowed
        return any(entry.rpartition(".")[2] == name for entry in self.allowed if "." in entry)


_policy = FunctionPolicy()


def use_function_policy(policy: FunctionPolicy) -> None:
    """Make `policy` the one validate_select applies by default (the runtime sets it once at start-up)."""
    global _policy
    _policy = policy


def function_policy() -> FunctionPolicy:
    return _policy


@dataclass(frozen=True)
class CheckedQuery:
    """A query the guard accepted: its text without a trailing semicolon, and what it touches."""

    sql: str
    relations: tuple[str, ...]
    volatile: bool
    # The parsed statement deparsed (pglast): identifiers folded by PostgreSQL's rules, literals kept,
    # spacing and keyword case canonical. What the answer cache keys on; None when it cannot be made.
    canonical: str | None = None

    @property
    def cacheable(self) -> bool:
        """True when the answer can be served from the cache until the next data load."""
        return (
            self.canonical is not None
            and not self.volatile
            and not any(_changes_between_loads(name) for name in self.relations)
        )


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
    """PostgreSQL's tokens of `sql` (positions are character indexes in `sql`).

    The scanner is shown every non-ASCII character as `z`: PostgreSQL lexes all of them as letters (or
    as any other character inside literals), so the tokens are the same, and pglast's position mapping,
    quadratic in the number of multi-byte characters, has nothing to do. The one place where which
    letter matters is a dollar-quote tag ($Ω$ ... $ω$ would both become $z$): those are refused."""
    if not sql.isascii():
        tag = _NON_ASCII_TAG.search(sql)
        if tag is not None:
            where = origin(tag.start()) if origin is not None else tag.start()
            raise InvalidInput(
                f"dollar-quote tag {tag.group()[:20]}{_at(where)} has non-ASCII characters; use an ASCII "
                "tag such as $q$...$q$, or a '...' string"
            )
        sql = _NON_ASCII.sub("z", sql)
    try:
        return list(parser.scan(sql))
    except parser.ParseError as error:
        raise _syntax_error(error, origin) from None


def _bounded_tokens(sql: str, origin: Callable[[int], int] | None = None) -> list[Any]:
    """The tokens of `sql`, once the query is known small and flat enough for the parser to be cheap
    and safe (MAX_QUERY_TOKENS, MAX_PARENTHESES, _NON_ASCII_WORK); else a one-line InvalidInput."""
    tokens = _scan(sql, origin)
    if len(tokens) > MAX_QUERY_TOKENS:
        raise InvalidInput(
            f"the query has {len(tokens):,} tokens (at most {MAX_QUERY_TOKENS:,}); simplify it, and pass a "
            "long list of values as one list parameter (WHERE id = ANY(%(ids)s))"
        )
    depth = deepest = 0
    for token in tokens:
        if token.name in ("ASCII_40", "ASCII_91"):  # ( [
            depth += 1
            if depth > deepest:
                deepest = depth
        elif token.name in ("ASCII_41", "ASCII_93"):  # ) ]
            depth -= 1
    if deepest > MAX_PARENTHESES:
        raise InvalidInput(
            f"the query nests parentheses {deepest:,} levels deep (at most {MAX_PARENTHESES}); simplify it"
        )
    if not sql.isascii():
        multibyte = len(sql.encode("utf-8")) - len(sql.encode("ascii", "ignore"))
        if len(tokens) * multibyte > _NON_ASCII_WORK:
            raise InvalidInput(
                f"the query has {len(sql) - len(sql.encode('ascii', 'ignore')):,} non-ASCII characters "
                f"among {len(tokens):,} tokens, too many to check; pass texts as %(name)s parameters"
            )
    return tokens


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
    tokens = _bounded_tokens(sql)
    pieces: list[str] = []
    names: list[str] = []
    shifts: list[tuple[int, int]] = []
    cursor = 0  # next unread character of sql
    bound_length = 0
    brackets = 0  # how many [ are open
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.name == "PARAM":
            raise InvalidInput(
                f"positional parameter '{sql[token.start : token.end + 1]}'{_at(token.start)} is not "
                "supported; write %(name)s and pass parameters={'name': value}"
            )
        if token.name == "ASCII_91":  # [ : a ':' inside brackets is an array slice, a[lo:hi]
            brackets += 1
        elif token.name == "ASCII_93":
            brackets -= 1
        elif token.name == "ASCII_58" and brackets <= 0 and i + 1 < len(tokens):
            # `:name` (psycopg's or SQLAlchemy's style); `::type` and `:=` are tokens of their own.
            follower = tokens[i + 1]
            word = sql[follower.start : follower.end + 1]
            if follower.start == token.end + 1 and _PARAMETER_NAME.match(word):
                raise InvalidInput(
                    f"placeholder ':{word}'{_at(token.start)} is not supported; write %({word})s "
                    f"and pass parameters={{'{word}': value}}"
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
            if token.start > 0 and _WORD_CHARACTER.match(sql[token.start - 1]):
                # `x%(a)s` would become `x$1`: one identifier to PostgreSQL, and no parameter at all.
                raise InvalidInput(
                    f"placeholder %({name})s{_at(token.start)} is glued to the word before it; "
                    "put a space or an operator before it (placeholders stand for values, not names)"
                )
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
    refuse_unused_parameters(parameters, names)
    return BoundQuery("".join(pieces), tuple(names), tuple(shifts))


def refuse_unused_parameters(parameters: Iterable[str], names: Iterable[str]) -> None:
    """Every engine's rule: a parameter no %(name)s placeholder uses is a mistake worth saying."""
    unused = sorted(set(parameters) - set(names))
    if unused:
        raise InvalidInput(
            f"parameters {', '.join(unused)} are not used by any %(name)s placeholder in the query; "
            "remove them or use them"
        )


def _check_text(sql: str) -> None:
    if not sql.strip():
        raise InvalidInput(f"the query is empty; {_HOW_TO}")
    if len(sql) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS:,} characters; shorten it")
    if "\x00" in sql:
        raise InvalidInput("the query contains a NUL character; remove it")
    if not sql.isascii():
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidInput(
                f"the query is not valid Unicode text (a lone surrogate{_at(error.start)}); remove it"
            ) from None


def validate_select(
    sql: str, origin: Callable[[int], int] | None = None, *, policy: FunctionPolicy | None = None
) -> CheckedQuery:
    """Accept exactly one read-only SELECT (or WITH ... SELECT) or raise a one-line error saying why not.

    `origin` maps a character position in `sql` back to the agent's text (after placeholder binding).
    `policy`: which functions may be called; by default the one the runtime installed at start-up.
    """
    functions = _policy if policy is None else policy
    _check_text(sql)
    tokens = _bounded_tokens(sql, origin)
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
    depth = _depth(statement)
    if depth > MAX_DEPTH:
        raise InvalidInput(
            f"the query nests {depth:,} levels deep (at most {MAX_DEPTH}): a long chain of operators "
            "(a + b + ...), or deeply nested CASE, functions or subqueries; simplify it"
        )
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
            functions.check(_names(node.funcname))
            volatile = volatile or name in _VOLATILE_FUNCTIONS
        elif isinstance(node, ast.SQLValueFunction):
            volatile = True  # current_timestamp, current_user and friends
        elif isinstance(node, ast.RangeVar):
            relation = (node.relname or "").lower()
            schema = (node.schemaname or "").lower()
            if schema in _INTERNAL_SCHEMAS or relation in _INTERNAL_SCHEMAS:
                raise QueryRefused(
                    f"schema '{schema or relation}' is internal to the server; {MAIN_READABLE}"
                )
            if relation in _DENIED_RELATIONS:
                raise QueryRefused(
                    f"catalog '{relation}' {_DENIED_RELATIONS[relation]} and may not be queried; {MAIN_READABLE}"
                )
            if relation.startswith(_ACTIVITY_RELATION_PREFIXES):
                raise QueryRefused(
                    f"catalog '{relation}' reveals server activity and may not be queried; {MAIN_READABLE}"
                )
            relations.append(f"{schema}.{relation}" if schema else relation)
    return CheckedQuery(text.rstrip(), tuple(dict.fromkeys(relations)), volatile, _canonical(statement))


def _canonical(statement: ast.Node) -> str | None:
    """The statement as PostgreSQL's parser understood it, printed back (None: the query is not cached).

    Two texts with the same canonical form are the same query to PostgreSQL, whatever their spacing
    or case: unquoted identifiers come out folded as PostgreSQL folds them (ASCII only), quoted ones
    and every literal exactly as written. The printer recurses: a very deep expression (over ~150
    nested operators) exceeds Python's recursion limit and is simply not cached.
    """
    try:
        return str(RawStream()(statement))
    except Exception:  # noqa: BLE001 - RecursionError, or a node the printer does not know: not cached
        return None


def table_aliases(sql: str) -> list[str]:
    """The names the query's tables go by (their alias, else their name), in order: for error hints."""
    try:
        statements = parse_sql(sql)
    except parser.ParseError:
        return []
    aliases: list[tuple[int, str | None]] = []  # (where it is in the text, name)
    for statement in statements:
        for node in _walk(statement.stmt):
            if isinstance(node, ast.RangeVar):
                name = node.alias.aliasname if node.alias is not None else node.relname
                aliases.append((node.location or 0, name))
            elif isinstance(node, ast.RangeSubselect) and node.alias is not None:
                aliases.append((len(sql), node.alias.aliasname))
    return list(dict.fromkeys(name for _, name in sorted(aliases, key=lambda item: item[0]) if name))


def _names(names: Sequence[Any] | None) -> list[str]:
    """A function's (possibly qualified) name as PostgreSQL will resolve it: parts exactly as parsed."""
    return [str(getattr(part, "sval", part)) for part in names or ()] or [""]


def _last_name(names: Sequence[Any] | None) -> str:
    if not names:
        return ""
    last = names[-1]
    return str(getattr(last, "sval", last)).lower()


def _depth(node: ast.Node) -> int:
    """How many nodes deep the tree under `node` goes (lists do not count), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, ast.Node):
            deepest = max(deepest, depth)
            for attribute in current:
                value = getattr(current, attribute, None)
                if isinstance(value, (ast.Node, tuple, list)):
                    stack.append((value, depth + 1))
        elif isinstance(current, (tuple, list)):
            stack.extend((item, depth) for item in current)
    return deepest


def _walk(node: Any) -> Iterator[ast.Node]:
    """Every AST node under `node`, depth first (the tree is small; recursion depth is bounded by the parser)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Node):
            yield current
            for attribute in current.__slots__:  # type: ignore[attr-defined]  # pglast's nodes declare them
                value = getattr(current, attribute, None)
                if isinstance(value, (ast.Node, tuple, list)):
                    stack.append(value)
        elif isinstance(current, (tuple, list)):
            stack.extend(current)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalised(sql: str) -> str:
    """The query with spacing and keyword case made canonical (for the query log's hash); literals are
    untouched. Unquoted words are folded as PostgreSQL folds identifiers: ASCII letters only (so `Ω`
    and `ω` stay two names, as they are to PostgreSQL)."""
    tokens = _scan(sql)
    words = []
    for token in tokens:
        text = sql[token.start : token.end + 1]
        if token.kind != "NO_KEYWORD" or (token.name == "IDENT" and not text.startswith('"')):
            text = text.translate(_ASCII_LOWER)
        words.append(text)
    if words and words[-1] == ";":
        words.pop()
    return " ".join(words)


_LITERALS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})


def masked(sql: str) -> str:
    """`normalised(sql)` with every literal (string, number, bit string) shown as `?`: identifiers,
    aliases and %(name)s placeholders kept. What the operator console shows of a logged query."""
    # Comments are left out: they are not part of the query and may hold anything.
    tokens = [token for token in _scan(sql) if token.name not in _COMMENTS]
    if tokens and tokens[-1].name == "ASCII_59":  # a trailing ;
        tokens.pop()
    parts: list[str] = []
    previous_end = None
    for token in tokens:
        text = sql[token.start : token.end + 1]
        if token.name in _LITERALS:
            text = "?"
        elif token.kind != "NO_KEYWORD" or (token.name == "IDENT" and not text.startswith('"')):
            text = text.translate(_ASCII_LOWER)
        # Tokens written together stay together (c.age, count(*), %(name)s); any spacing becomes one space.
        if previous_end is not None and token.start > previous_end + 1:
            parts.append(" ")
        parts.append(text)
        previous_end = token.end
    return "".join(parts)
