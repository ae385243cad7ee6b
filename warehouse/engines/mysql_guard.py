"""SQL safety for MySQL/MariaDB sources: exactly one read-only SELECT over the source's allowed tables.

Pure functions, no I/O. A second layer, not the boundary: the operator's account may only SELECT, and
each query runs in a READ ONLY transaction with max_statement_time, always rolled back. The text is
first scanned by a small lexer of MySQL's own rules (bounded, flat): it refuses what MySQL executes but
a parser would skip (comments, `/*! ... */`), variables, and every call of a function not on the
allowlist; then sqlglot's MySQL dialect must read one SELECT whose relations are all allowed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from core.errors import InvalidInput, QueryRefused
from warehouse.engines import GuardedStatement
from warehouse.sqlguard import refuse_unused_parameters

MAX_QUERY_CHARS = 50_000
MAX_QUERY_TOKENS = 2_200  # sqlglot parses recursively: bounded before it sees the text
MAX_PARENTHESES = 100
_HOW_TO = "send one read-only SELECT (or WITH ... SELECT)"
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_WORD = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]+")
_SPACE = " \t\n\r\f\v"  # MySQL's whitespace (other Unicode spaces are identifier characters to it)
_PLACEHOLDER = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]{0,62})\)s")

# Built-in functions an agent may call: string, math, date, aggregate, window, JSON reads, casts.
# Anything else (SLEEP, BENCHMARK, LOAD_FILE, GET_LOCK, stored functions, UDFs...) is refused.
ALLOWED_FUNCTIONS = frozenset(
    """
    abs acos asin atan atan2 ceil ceiling conv cos cot crc32 degrees div exp floor greatest least ln log
    log10 log2 mod pi pow power radians rand round sign sin sqrt tan truncate
    ascii bin bit_length char char_length character_length concat concat_ws elt export_set field
    find_in_set format from_base64 hex insert instr lcase left length locate lower lpad ltrim make_set
    mid oct octet_length ord position quote regexp_instr regexp_like regexp_replace regexp_substr repeat
    replace reverse right rpad rtrim soundex space strcmp substr substring substring_index to_base64
    trim ucase unhex upper weight_string
    adddate addtime convert_tz curdate current_date current_time current_timestamp curtime date
    date_add date_format date_sub datediff day dayname dayofmonth dayofweek dayofyear extract
    from_days from_unixtime get_format hour last_day localtime localtimestamp makedate maketime
    microsecond minute month monthname now period_add period_diff quarter sec_to_time second
    str_to_date subdate subtime sysdate time time_format time_to_sec timediff timestamp timestampadd
    timestampdiff to_days to_seconds unix_timestamp utc_date utc_time utc_timestamp week weekday
    weekofyear year yearweek
    avg bit_and bit_or bit_xor count group_concat json_arrayagg json_objectagg max min std stddev
    stddev_pop stddev_samp sum var_pop var_samp variance median percentile_cont percentile_disc
    cume_dist dense_rank first_value lag last_value lead nth_value ntile percent_rank rank row_number
    json_array json_contains json_contains_path json_depth json_extract json_keys json_length
    json_object json_overlaps json_quote json_search json_type json_unquote json_valid json_value
    cast convert coalesce if ifnull isnull nullif interval
    md5 sha sha1 sha2 uuid inet_aton inet_ntoa
    """.split()
)
# Words that may stand before "(" without being a function call.
_KEYWORDS_BEFORE_PARENTHESIS = frozenset(
    """
    select from where and or not xor in as on using join exists any some all union intersect except
    with recursive over partition by order group having limit offset case when then else end is like
    rlike regexp between distinct values row by asc desc window rows range preceding following
    unbounded current escape binary div mod lateral natural inner left right outer cross straight_join
    key index use force ignore for date time timestamp interval separator null
    """.split()
)
# Refused with a reason wherever they are (outside literals and quoted names).
_REFUSED_WORDS = {
    "into": "SELECT ... INTO writes files or variables; drop the INTO clause",
    "outfile": "INTO OUTFILE writes a file on the server; drop it",
    "dumpfile": "INTO DUMPFILE writes a file on the server; drop it",
    "procedure": "PROCEDURE clauses run server code; drop it",
    "lock": "locking reads (LOCK IN SHARE MODE) are not allowed; drop the clause",
    "update": "FOR UPDATE locks rows and is not allowed; drop the FOR UPDATE clause",
    "handler": "HANDLER reads tables outside SELECT and is not allowed",
    "prepare": "PREPARE runs SQL text the guard cannot see and is not allowed",
    "execute": "EXECUTE runs SQL text the guard cannot see and is not allowed",
    "deallocate": "DEALLOCATE is not allowed",
}
_FUNCTION_REASONS = {
    "load_file": "reads a file on the server (and answers NULL when it cannot)",
    "sleep": "only holds a connection",
    "benchmark": "only burns server CPU",
    "get_lock": "takes a server-wide lock",
    "release_lock": "touches server-wide locks",
    "release_all_locks": "touches server-wide locks",
    "is_free_lock": "touches server-wide locks",
    "is_used_lock": "touches server-wide locks",
    "master_pos_wait": "waits on replication",
    "master_gtid_wait": "waits on replication",
    "source_pos_wait": "waits on replication",
    "wait_for_executed_gtid_set": "waits on replication",
    "connection_id": "reveals server state",
    "database": "reveals server state",
    "user": "reveals server state",
    "current_user": "reveals server state",
    "session_user": "reveals server state",
    "system_user": "reveals server state",
    "version": "reveals server state",
    "last_insert_id": "reveals server state",
    "found_rows": "reveals server state",
    "row_count": "reveals server state",
    "des_decrypt": "uses keys on the server",
    "des_encrypt": "uses keys on the server",
    "aes_decrypt": "is not an analysis function",
    "aes_encrypt": "is not an analysis function",
    "name_const": "is not an analysis function",
    "extractvalue": "parses XML (error-based data leaks)",
    "updatexml": "parses XML (error-based data leaks)",
    "nextval": "changes a sequence",
    "setval": "changes a sequence",
    "lastval": "reads a sequence",
}
_VOLATILE_FUNCTIONS = frozenset(
    """
    rand now sysdate curdate current_date current_time current_timestamp curtime localtime
    localtimestamp unix_timestamp utc_date utc_time utc_timestamp uuid
    """.split()
)
# Schemas that are the server's, never a source's.
_SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")


@dataclass(frozen=True)
class _Scan:
    """What the lexer found: the text for the driver, the parser's copy, and the calls and names."""

    driver_sql: str  # %(name)s -> %s, other % doubled when there are parameters
    parse_sql: str  # %(name)s -> NULL (or (NULL) for a list), for the parser
    names: tuple[str, ...]  # placeholder names in order of appearance (repeats included)
    calls: tuple[tuple[str, int, bool], ...]  # (word before "(", position, qualified with ".")


def validate_mysql_select(
    sql: str,
    parameters: Mapping[str, Any],
    *,
    database: str,
    allowed: frozenset[str],
) -> GuardedStatement:
    """Accept one read-only SELECT over `allowed` tables of `database`, or raise a one-line error.

    `allowed`: the source's allowed table names (its allow rules applied to its catalog)."""
    _check_text(sql)
    for name in parameters:
        if not _PARAMETER_NAME.fullmatch(name):
            raise InvalidInput(f"parameter name '{name[:40]}' is not valid; use letters, digits and _")
    first = _WORD.search(sql)
    opening = sql.lstrip()[:1]
    if opening != "(" and (first is None or first.group().lower() not in ("select", "with")):
        what = first.group().upper()[:30] if first is not None else "this"
        raise QueryRefused(f"only SELECT queries are allowed, not {what}; {_HOW_TO}")
    scan = _scan(sql, parameters)
    refuse_unused_parameters(parameters, scan.names)
    try:
        statements = [s for s in sqlglot.parse(scan.parse_sql, read="mysql") if s is not None]
    except SqlglotError as error:
        reason = str(error).splitlines()[0][:200]
        raise InvalidInput(f"syntax error: {reason}; fix the SQL and retry") from None
    if len(statements) != 1:
        raise QueryRefused(f"expected exactly one statement, got {len(statements)}; {_HOW_TO}")
    statement = statements[0]
    if not isinstance(statement, (exp.Select, exp.SetOperation)):
        what = statement.key.upper() if not isinstance(statement, exp.Command) else str(statement.this)
        raise QueryRefused(f"only SELECT queries are allowed, not {what.upper()}; {_HOW_TO}")
    cte_names = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
    for name, position, qualified in scan.calls:
        _check_call(name, position, qualified, cte_names)
    relations: list[str] = []
    volatile = False
    for node in statement.walk():
        if isinstance(node, (exp.Command, exp.Set, exp.Into)):
            raise QueryRefused(f"{node.key.upper()} is not allowed inside a query; {_HOW_TO}")
        if isinstance(node, exp.Lock):
            raise QueryRefused("locking reads (FOR UPDATE / FOR SHARE) are not allowed; drop the clause")
        if isinstance(node, (exp.Parameter, exp.SessionParameter, exp.PropertyEQ)):
            raise QueryRefused("variables (@x, @@x, :=) are not allowed; pass values as %(name)s parameters")
        if isinstance(node, exp.Anonymous):
            _check_call(node.name.lower(), None, False, cte_names)
        if isinstance(node, exp.Func):
            names = (
                {node.name.lower()}
                if isinstance(node, exp.Anonymous)
                else {n.lower() for n in node.sql_names()}
            )
            volatile = volatile or bool(names & _VOLATILE_FUNCTIONS)
        if isinstance(node, (exp.CurrentDate, exp.CurrentTimestamp, exp.CurrentTime, exp.Rand)):
            volatile = True
        if isinstance(node, exp.Table):
            relation = _relation(node, cte_names, database, allowed)
            if relation is not None:
                relations.append(relation)
    canonical = _canonical(statement)
    digest = hashlib.sha256((canonical or sql).encode("utf-8", "replace")).hexdigest()
    return GuardedStatement(
        sql=scan.driver_sql.rstrip(),
        names=scan.names,
        relations=tuple(dict.fromkeys(relations)),
        volatile=volatile,
        canonical=canonical,
        hash=digest,
    )


def _check_call(name: str, position: int | None, qualified: bool, cte_names: set[str]) -> None:
    where = f" (character {position + 1})" if position is not None else ""
    if qualified:
        raise QueryRefused(
            f"function {name}(){where} is not allowed: stored functions may not be called; remove it"
        )
    if name in _KEYWORDS_BEFORE_PARENTHESIS or name in cte_names or name in ALLOWED_FUNCTIONS:
        return
    reason = _FUNCTION_REASONS.get(name)
    if reason is not None:
        raise QueryRefused(f"function {name}(){where} is not allowed: it {reason}; remove it from the query")
    raise QueryRefused(
        f"function {name}(){where} is not allowed: only built-in string, math, date, aggregate, window "
        "and JSON functions may be called; remove it"
    )


def _relation(node: exp.Table, cte_names: set[str], database: str, allowed: frozenset[str]) -> str | None:
    """The relation a FROM item reads, after checking it is one of the source's allowed tables."""
    if not isinstance(node.this, exp.Identifier):
        if node.this is None:
            return None
        raise QueryRefused(f"table functions are not allowed in FROM ({node.this.sql()[:40]}); read a table")
    name = node.name
    schema = node.db
    if node.catalog:
        raise QueryRefused(f"'{node.sql()[:60]}' is not a table of this source; {_allowed_text(allowed)}")
    if not schema and _names_a_cte(node):
        return None
    if name.lower() == "dual" and not schema:
        return None
    if schema.lower() in _SYSTEM_SCHEMAS:
        raise QueryRefused(
            f"schema '{schema}' is the server's catalog and may not be queried; {_allowed_text(allowed)}"
        )
    if schema and schema != database:
        raise QueryRefused(f"'{schema}.{name}' is in another database; {_allowed_text(allowed)}")
    if name.lower() not in {table.lower() for table in allowed}:
        raise QueryRefused(f"table '{name}' is not part of this source; {_allowed_text(allowed)}")
    return name


def _names_a_cte(table: exp.Table) -> bool:
    """True when an unqualified name reads a CTE in scope rather than a table. As MySQL scopes them: a
    CTE sees the CTEs before it in its WITH (and itself only under RECURSIVE), so `WITH t AS (SELECT *
    FROM t)` reads the table t, which must then be allowed."""
    name = table.name.lower()
    previous: Any = table
    node: Any = table.parent
    while node is not None:
        if isinstance(node, exp.With) and isinstance(previous, exp.CTE):
            position = next(i for i, cte in enumerate(node.expressions) if cte is previous)
            visible = node.expressions[: position + (1 if node.args.get("recursive") else 0)]
            if any(cte.alias_or_name.lower() == name for cte in visible):
                return True
        elif not isinstance(previous, exp.With):
            scope = node.args.get("with_") or node.args.get("with")
            if isinstance(scope, exp.With) and any(
                cte.alias_or_name.lower() == name for cte in scope.expressions
            ):
                return True
        previous, node = node, node.parent
    return False


def _allowed_text(allowed: frozenset[str]) -> str:
    names = sorted(allowed)
    shown = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    return f"the tables are {shown or '(none)'}"


def _canonical(statement: exp.Expression) -> str | None:
    try:
        return statement.sql(dialect="mysql", normalize=True)
    except Exception:  # noqa: BLE001 - a node the generator cannot print: the query is not cached
        return None


def _check_text(sql: str) -> None:
    if not sql.strip():
        raise InvalidInput(f"the query is empty; {_HOW_TO}")
    if len(sql) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS:,} characters; shorten it")
    if "\x00" in sql:
        raise InvalidInput("the query contains a NUL character; remove it")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the query is not valid Unicode text (a lone surrogate); remove it") from None


def _scan(sql: str, parameters: Mapping[str, Any]) -> _Scan:
    """MySQL's lexical rules (sql_mode without ANSI_QUOTES or NO_BACKSLASH_ESCAPES, which the engine
    sets): literals and quoted names are skipped whole, everything MySQL would treat as a comment or a
    variable is refused, and placeholders are bound. Flat and linear, so it bounds the parser's input."""
    driver: list[str] = []
    parse: list[str] = []
    names: list[str] = []
    calls: list[tuple[str, int, bool]] = []
    escape_percent = bool(parameters)
    tokens = depth = 0
    semicolon: int | None = None
    previous_word: tuple[str, int, bool] | None = None  # the last word, if nothing but spaces followed
    i, length = 0, len(sql)
    while i < length:
        char = sql[i]
        if semicolon is not None and char not in _SPACE:
            raise QueryRefused(f"more than one statement (character {semicolon + 1}); {_HOW_TO}")
        start = i
        if char in _SPACE:
            i += 1
            driver.append(char)
            parse.append(char)
            continue
        tokens += 1
        if tokens > MAX_QUERY_TOKENS:
            raise InvalidInput(
                f"the query has more than {MAX_QUERY_TOKENS:,} tokens; simplify it, and pass a long "
                "list of values as one list parameter (WHERE id IN %(ids)s)"
            )
        if char in "'\"`":
            i = _end_of_quoted(sql, i)
            piece = sql[start:i]
            driver.append(piece.replace("%", "%%") if escape_percent else piece)
            parse.append(piece)
            # A quoted name before "(" calls a stored function or UDF, never a built-in.
            previous_word = (piece, start, True) if char == "`" else None
            continue
        if char == "#" or sql.startswith("--", i) or sql.startswith("/*", i):
            executable = sql.startswith(("/*!", "/*M!", "/*m!"), i)
            if executable:
                raise QueryRefused(
                    f"executable comments (/*! ... */, /*M! ... */) are not allowed (character {i + 1}); "
                    "remove them"
                )
            if sql.startswith("--", i) and i + 2 < length and sql[i + 2] not in _SPACE:
                raise QueryRefused(
                    f"'--' (character {i + 1}) reads differently to MySQL and to the guard; "
                    "write '- -' for a double minus"
                )
            raise QueryRefused(f"comments are not allowed (character {i + 1}); remove '#', '--' and '/* */'")
        if char == "@":
            raise QueryRefused(
                f"variables (@x, @@x) are not allowed (character {i + 1}); pass values as %(name)s parameters"
            )
        if sql.startswith(":=", i):
            raise QueryRefused(f"assignments (:=) are not allowed (character {i + 1}); {_HOW_TO}")
        if char == ":" and _PARAMETER_NAME.match(sql, i + 1):
            word = _PARAMETER_NAME.match(sql, i + 1).group()  # type: ignore[union-attr]
            raise InvalidInput(
                f"placeholder ':{word}' (character {i + 1}) is not supported; write %({word})s and pass "
                f"parameters={{'{word}': value}}"
            )
        if char == "?":
            raise InvalidInput(
                f"placeholder '?' (character {i + 1}) is not supported; write %(name)s and pass parameters"
            )
        if char == "\\":
            raise InvalidInput(f"a backslash outside a string (character {i + 1}) is not valid here")
        if char == "%":
            placeholder = _PLACEHOLDER.match(sql, i)
            if placeholder is not None:
                name = placeholder.group(1)
                if name not in parameters:
                    given = ", ".join(sorted(parameters)) or "none"
                    raise InvalidInput(
                        f"placeholder %({name})s (character {i + 1}) has no value in parameters "
                        f"(given: {given}); add '{name}' to parameters"
                    )
                names.append(name)
                driver.append("%s")
                value = parameters[name]
                parse.append("(NULL)" if isinstance(value, (list, tuple)) else "NULL")
                i = placeholder.end()
                previous_word = None
                continue
            if sql.startswith("%(", i) or sql.startswith(("%s", "%d"), i):
                raise InvalidInput(
                    f"malformed placeholder (character {i + 1}); write %(name)s with a name in parameters "
                    "(for the modulo operator put spaces around %)"
                )
            driver.append("%%" if escape_percent else "%")
            parse.append("%")
            i += 1
            previous_word = None
            continue
        word = _WORD.match(sql, i)
        if word is not None:
            text = word.group()
            lower = text.lower()
            if lower in _REFUSED_WORDS:
                raise QueryRefused(f"{_REFUSED_WORDS[lower]} (character {i + 1}); {_HOW_TO}")
            qualified = start > 0 and sql[start - 1] == "."
            previous_word = (lower, start, qualified)
            driver.append(text)
            parse.append(text)
            i = word.end()
            continue
        if char == "(":
            depth += 1
            if depth > MAX_PARENTHESES:
                raise InvalidInput(f"the query nests parentheses over {MAX_PARENTHESES} deep; simplify it")
            if previous_word is not None and not previous_word[0][0].isdigit():
                calls.append(previous_word)
        elif char == ")":
            depth -= 1
        elif char == ";":
            semicolon = i
            i += 1
            continue  # a single trailing ';' is dropped
        previous_word = None
        driver.append(char)
        parse.append(char)
        i += 1
    return _Scan("".join(driver), "".join(parse), tuple(names), tuple(calls))


def _end_of_quoted(sql: str, start: int) -> int:
    """The index after the literal or quoted name starting at `start` (MySQL's escaping rules)."""
    quote = sql[start]
    i = start + 1
    while i < len(sql):
        char = sql[i]
        if char == "\\" and quote != "`":
            i += 2
            continue
        if char == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    what = "quoted name" if quote == "`" else "string"
    raise InvalidInput(f"unterminated {what} starting at character {start + 1}; close it")


def main_query_start(sql: str) -> int:
    """Where the main query of a guarded `WITH ... SELECT` starts (0 for a query without WITH): the
    first SELECT, or a "(" right after the last CTE's ")", outside parentheses and literals."""
    first = _WORD.search(sql)
    if first is None or first.group().lower() != "with":
        return 0
    depth = 0
    last = ""  # the last thing seen outside parentheses: a word, ")" or ","
    i = first.end()
    while i < len(sql):
        char = sql[i]
        if char in "'\"`":
            i = _end_of_quoted(sql, i)
            last = "quoted"
            continue
        word = _WORD.match(sql, i)
        if word is not None:
            if depth == 0:
                if word.group().lower() == "select":
                    return i
                last = word.group().lower()
            i = word.end()
            continue
        if char == "(":
            if depth == 0 and last == ")":
                return i
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                last = ")"
        elif depth == 0 and not char.isspace():
            last = char
        i += 1
    raise InvalidInput(f"the WITH query has no main SELECT; {_HOW_TO}")
