"""SQL safety for files sources, with sqlglot's DuckDB dialect: one SELECT over the registered views only.

A pure function, no I/O. It is one layer of several, not the boundary: the DuckDB database it guards
can reach only the registered files, its configuration is locked, and it has a memory limit and a
timeout (warehouse/engines/duckdb_files.py). What those settings leave open (ATTACH ':memory:', CALL,
temporary tables, views and macros, DROP VIEW, CHECKPOINT, reading a registered file through a table
function) is refused here: the statement must be one SELECT, every relation a registered view (or a
CTE of the query), and every function one of a short list of built-ins that only compute on values.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import sqlglot
from sqlglot import Token, TokenType, exp
from sqlglot.errors import ErrorLevel, ParseError, TokenError

from core.errors import InvalidInput, QueryRefused
from warehouse.sqlguard import refuse_unused_parameters

MAX_QUERY_CHARS = 50_000
# Bounds checked on the flat token list before the (recursive, pure-Python) parser sees the text.
MAX_QUERY_TOKENS = 2_200
# Nesting of ( [ {: sqlglot's parser takes ~25 Python frames a level, so 40 levels of subqueries
# overflowed the interpreter's recursion limit; 30 parse with room to spare.
MAX_PARENTHESES = 30
MAX_DEPTH = 100  # nesting of the parsed tree, checked iteratively before anything recurses over it
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_HOW_TO = "send one SELECT (or WITH ... SELECT) over the source's tables"
_DIALECT = "duckdb"
_Node = Any  # a sqlglot node: exp.Expr in sqlglot 30, exp.Expression before

# Built-ins that compute on the values they are given and nothing else. Everything else is refused:
# table functions (read_csv, glob, query, range...), settings and catalog functions (current_setting,
# getvariable, duckdb_*), and anything that names a function to call by a string (list_aggregate).
AGGREGATE_FUNCTIONS = frozenset(
    """any_value approx_count_distinct approx_quantile arg_max arg_min argmax argmin array_agg avg
    bit_and bit_or bit_xor bool_and bool_or corr count count_if countif covar_pop covar_samp entropy
    first last favg fsum geomean geometric_mean group_concat grouping grouping_id histogram kurtosis
    kurtosis_pop list listagg
    mad max max_by mean median min min_by mode product quantile quantile_cont quantile_disc regr_avgx
    regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy sem skewness
    stddev stddev_pop stddev_samp string_agg sum var_pop var_samp variance weighted_avg wavg""".split()
)
WINDOW_FUNCTIONS = frozenset(
    """cume_dist dense_rank first_value lag last_value lead nth_value ntile percent_rank rank
    row_number""".split()
)
SCALAR_FUNCTIONS = frozenset(
    """abs acos asin atan atan2 cbrt ceil ceiling cos cot degrees exp factorial floor gamma gcd greatest
    least lcm ln log log2 log10 mod pi pow power radians round sign sin sqrt tan trunc even isnan isinf
    isfinite random
    ascii chr concat concat_ws contains ends_with starts_with prefix suffix instr left right length lower
    upper lcase ucase lpad rpad ltrim rtrim trim repeat replace reverse split_part string_split str_split
    strlen strpos position substr substring regexp_matches regexp_replace regexp_extract
    regexp_extract_all regexp_full_match levenshtein jaro_winkler_similarity jaccard hamming
    damerau_levenshtein md5 sha256 hash format printf char_length character_length octet_length
    bit_length translate to_base64 from_base64 base64 hex unhex to_hex from_hex editdist3 strip_accents
    array_to_string array_cat array_concat array_distinct
    age date_add date_diff datediff date_part datepart date_sub datesub date_trunc datetrunc day dayname
    dayofmonth dayofweek dayofyear decade epoch epoch_ms extract hour isodow isoyear last_day make_date
    make_time make_timestamp microsecond millisecond minute month monthname quarter second strftime
    strptime time_bucket to_timestamp try_strptime week weekday weekofyear year yearweek to_days
    to_hours to_minutes to_seconds to_months to_years to_weeks century millennium
    current_date now today current_timestamp get_current_timestamp
    coalesce ifnull nullif if
    list_value list_extract list_element list_contains list_has list_position list_sort
    list_reverse_sort list_distinct list_unique list_slice list_concat list_cat list_transform
    list_apply list_filter array_length len list_sum list_avg list_min list_max list_count flatten
    struct_pack struct_extract map map_keys map_values map_extract element_at cardinality typeof
    json_extract json_extract_string json_value json_keys json_array_length to_json json_valid
    gen_random_uuid uuid""".split()
)
ALLOWED_FUNCTIONS = AGGREGATE_FUNCTIONS | WINDOW_FUNCTIONS | SCALAR_FUNCTIONS
_VOLATILE_NAMES = frozenset(
    "random now today current_date current_timestamp get_current_timestamp gen_random_uuid uuid".split()
)

# Statements and clauses that are refused wherever they appear (the root must be a query anyway).
_REFUSED_NODES: dict[str, str] = {
    "Into": "SELECT ... INTO writes a table",
    "Lock": "locks rows",
    "Command": "is not a query",
    "Create": "creates objects",
    "Drop": "drops objects",
    "Insert": "writes data",
    "Update": "writes data",
    "Delete": "writes data",
    "Merge": "writes data",
    "Copy": "reads or writes files",
    "Export": "writes files",
    "Attach": "attaches a database",
    "Detach": "detaches a database",
    "Set": "changes settings",
    "SetItem": "changes settings",
    "Pragma": "changes or reads settings",
    "Use": "changes the current database",
    "Transaction": "controls transactions",
    "Commit": "controls transactions",
    "Rollback": "controls transactions",
    "Alter": "changes objects",
    "Describe": "is not a query",
    "Summarize": "is not a query",
    "Install": "installs extensions",
    "Load": "loads extensions",
    "LoadData": "reads files",
    "Cache": "creates objects",
    "Uncache": "drops objects",
    "TruncateTable": "writes data",
    "Show": "is not a query",
}


@dataclass(frozen=True)
class BoundQuery:
    sql: str  # `%(name)s` replaced by `$n`
    names: tuple[str, ...]  # the name of $1, $2 ...


@dataclass(frozen=True)
class CheckedQuery:
    sql: str
    names: tuple[str, ...]
    relations: tuple[str, ...]  # the registered views it reads (lower case)
    volatile: bool
    canonical: str
    hash: str


def validate_select(sql: str, parameters: Iterable[str], views: Iterable[str]) -> CheckedQuery:
    """Bind `%(name)s` placeholders and check `sql` is one SELECT over `views` (raises InvalidInput or
    QueryRefused, one line). Parses: from async code, call it on a worker thread."""
    view_names = {view.lower() for view in views}
    bound = bind_placeholders(sql, list(parameters))
    _check_with_duckdb(bound.sql)
    try:
        statements = sqlglot.parse(bound.sql, read=_DIALECT, error_level=ErrorLevel.RAISE)
    except ParseError as error:
        raise InvalidInput(f"syntax error{_where(error)}; check the SQL ({_HOW_TO})") from None
    except RecursionError:  # a backstop: the bounds above keep the parser well within the limit
        raise InvalidInput("the query nests too deep to check; flatten it") from None
    except TokenError:
        raise InvalidInput("syntax error: the query cannot be read; check quotes and comments") from None
    statements = [s for s in statements if s is not None and type(s).__name__ != "Semicolon"]
    if len(statements) != 1:
        raise QueryRefused(f"the query has {len(statements)} statements; {_HOW_TO}")
    statement = statements[0]
    _check_depth(statement)
    if not isinstance(statement, exp.Query):
        first = bound.sql.split(None, 1)[0].upper()[:20]
        raise QueryRefused(f"{first} statements are not allowed: {_HOW_TO}")
    relations = _check_tree(statement, view_names)
    canonical = statement.sql(dialect=_DIALECT, normalize=True, comments=False)
    return CheckedQuery(
        sql=bound.sql,
        names=bound.names,
        relations=tuple(sorted(relations)),
        volatile=_is_volatile(statement),
        canonical=canonical,
        hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def _check_with_duckdb(sql: str) -> None:
    """DuckDB's own parser must also see exactly one SELECT: where it and sqlglot read a text differently
    (string escapes, nested comments), the text is refused rather than trusted to either."""
    try:
        with _PARSER_LOCK:
            statements = _PARSER.extract_statements(sql)
    except duckdb.Error as error:
        reason = (str(error).splitlines() or ["unreadable"])[0].removeprefix("Parser Error: ")[:200]
        if not reason.startswith("syntax error"):
            reason = f"syntax error: {reason}"
        raise InvalidInput(f"{reason}; check the SQL ({_HOW_TO})") from None
    if len(statements) != 1:
        raise QueryRefused(f"the query has {len(statements)} statements; {_HOW_TO}")
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = str(statements[0].type).rsplit(".", 1)[-1]
        raise QueryRefused(f"{kind} statements are not allowed: {_HOW_TO}")


# Only parses (extract_statements): a database of its own that nothing is ever run on.
_PARSER = duckdb.connect(":memory:")
_PARSER_LOCK = threading.Lock()


def bind_placeholders(sql: str, parameters: list[str]) -> BoundQuery:
    """`%(name)s` (found among sqlglot's tokens, so never inside a string) becomes `$n`; other styles
    (`$1`, `?`, `:name`) are refused, as are placeholders without a value and values without one."""
    for name in parameters:
        if not _PARAMETER_NAME.match(name):
            raise InvalidInput(f"parameter name '{name[:40]}' is not valid; use letters, digits and _")
    tokens = bounded_tokens(sql)
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:  # `SELECT 1;` is one statement too
        sql = sql[: tokens.pop().start]
    pieces: list[str] = []
    names: list[str] = []
    cursor = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.token_type in (TokenType.PARAMETER, TokenType.PLACEHOLDER):
            raise InvalidInput(
                f"placeholder '{token.text}' at character {token.start + 1} is not supported; write "
                "%(name)s and pass parameters={'name': value}"
            )
        window = tokens[i : i + 5]
        if token.token_type == TokenType.MOD and len(window) == 5:
            kinds = [t.token_type for t in window]
            glued = all(window[k].end + 1 == window[k + 1].start for k in range(4))
            if (
                glued
                and kinds[1] == TokenType.L_PAREN
                and kinds[3] == TokenType.R_PAREN
                and window[4].text == "s"
                and _PARAMETER_NAME.match(window[2].text)
                and sql[window[2].start : window[2].end + 1] == window[2].text
            ):
                name = window[2].text
                if name not in parameters:
                    given = ", ".join(sorted(parameters)) or "none"
                    raise InvalidInput(
                        f"placeholder %({name})s at character {token.start + 1} has no value in "
                        f"parameters (given: {given}); add '{name}' to parameters"
                    )
                if name not in names:
                    names.append(name)
                pieces.append(sql[cursor : token.start])
                pieces.append(f" ${names.index(name) + 1} ")
                cursor = window[4].end + 1
                i += 5
                continue
            if glued or (window[1].start == token.end + 1 and kinds[1] == TokenType.L_PAREN):
                raise InvalidInput(
                    f"malformed placeholder at character {token.start + 1}; write %(name)s with a name "
                    "in parameters (for the modulo operator put spaces around %)"
                )
        i += 1
    pieces.append(sql[cursor:])
    refuse_unused_parameters(parameters, names)
    return BoundQuery("".join(pieces), tuple(names))


def bounded_tokens(sql: str) -> list[Token]:
    """The text's tokens, after checking its size, token count and nesting (no parsing yet)."""
    if not sql.strip():
        raise InvalidInput(f"the query is empty; {_HOW_TO}")
    if len(sql) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is {len(sql)} characters; the limit is {MAX_QUERY_CHARS}, shorten it")
    try:
        tokens = sqlglot.tokenize(sql, read=_DIALECT)
    except TokenError:
        raise InvalidInput("syntax error: the query cannot be read; check quotes and comments") from None
    if len(tokens) > MAX_QUERY_TOKENS:
        raise InvalidInput(
            f"the query has {len(tokens)} tokens; the limit is {MAX_QUERY_TOKENS}: simplify it "
            "(aggregate in fewer expressions, use IN lists with parameters)"
        )
    depth = 0
    for token in tokens:
        if token.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
            if depth > MAX_PARENTHESES:
                raise InvalidInput(f"the query nests brackets more than {MAX_PARENTHESES} deep; flatten it")
        elif token.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
    return tokens


def _check_depth(statement: _Node) -> None:
    stack: list[tuple[_Node, int]] = [(statement, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInput(f"the query nests expressions more than {MAX_DEPTH} deep; simplify it")
        stack.extend((child, depth + 1) for child in node.iter_expressions())


def _check_tree(statement: _Node, views: set[str]) -> set[str]:
    """Every node checked; returns the registered views the statement reads."""
    relations: set[str] = set()
    for node in statement.walk():
        kind = type(node).__name__
        if kind in _REFUSED_NODES:
            raise QueryRefused(
                f"the query contains {_statement_name(node)}, which {_REFUSED_NODES[kind]}: {_HOW_TO}"
            )
        if isinstance(node, exp.Placeholder) and not str(node.name).isdigit():
            raise InvalidInput(f"placeholder '{node.sql(dialect=_DIALECT)}' is not supported; write %(name)s")
        if isinstance(node, exp.Table):
            relations.update(_check_relation(node, views))
        elif isinstance(node, exp.Func) and not isinstance(node, _OPERATORS):
            _check_function(node)
    return relations


def _check_relation(table: exp.Table, views: set[str]) -> set[str]:
    allowed = ", ".join(sorted(views)) or "none"
    target = table.this
    if not isinstance(target, exp.Identifier):
        name = _function_name(target) if isinstance(target, exp.Func) else type(target).__name__.lower()
        raise QueryRefused(
            f"table function {name}() is not allowed: read the source's tables ({allowed}) by name"
        )
    name = target.name
    if table.args.get("db") or table.args.get("catalog"):
        raise QueryRefused(
            f"relation '{table.sql(dialect=_DIALECT)}' is not allowed; name a table without a schema: {allowed}"
        )
    if _names_a_cte(table, name.lower()):
        return set()
    if name.lower() not in views:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise QueryRefused(f"relation '{shown}' is not a table of this source; the tables are {allowed}")
    return {name.lower()}


# Operators (a AND b, a + b, a LIKE b) are Func nodes in sqlglot too; they call nothing by name.
_OPERATORS = (exp.Binary, exp.Unary, exp.Connector)


def _names_a_cte(table: exp.Table, name: str) -> bool:
    """Whether a WITH of a query enclosing `table` defines `name` (a CTE is visible only inside it)."""
    node = table.parent
    while node is not None:
        with_clause = node.args.get("with_") or node.args.get("with")
        if isinstance(with_clause, exp.With) and any(
            cte.alias_or_name.lower() == name for cte in with_clause.expressions
        ):
            return True
        node = node.parent
    return False


def _check_function(function: exp.Func) -> None:
    if isinstance(function, exp.Anonymous):
        name = function.name.lower()
        if name in ALLOWED_FUNCTIONS:
            return
        raise QueryRefused(
            f"function {name[:60]}() is not allowed; use built-in functions that compute on values"
        )
    if type(function) in _ALLOWED_CLASSES:
        return
    raise QueryRefused(
        f"function {_function_name(function)}() is not allowed; use built-in functions that compute on values"
    )


def _function_name(function: _Node) -> str:
    if isinstance(function, exp.Anonymous):
        return function.name.lower()[:60]
    if isinstance(function, exp.Func):
        return function.sql_name().lower()
    return type(function).__name__.lower()


def _is_volatile(statement: _Node) -> bool:
    for node in statement.find_all(exp.Func):
        if isinstance(node, exp.Anonymous):
            if node.name.lower() in _VOLATILE_NAMES:
                return True
        elif type(node) in _VOLATILE_CLASSES:
            return True
    return False


def _statement_name(node: _Node) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    key = node.key.upper()
    kind = node.args.get("kind")
    return f"{key} {kind}".upper() if isinstance(kind, str) else key


def _where(error: ParseError) -> str:
    details = error.errors[0] if error.errors else {}
    if details.get("line") and details.get("col"):
        near = str(details.get("highlight") or "")[:40]
        return f" at line {details['line']}, column {details['col']}" + (f" near '{near}'" if near else "")
    return ""


def _probe_classes(names: Iterable[str]) -> frozenset[type[exp.Func]]:
    """The sqlglot classes the DuckDB parser builds for these function names (sum -> exp.Sum): a call
    sqlglot knows is checked by its class, an unknown one (exp.Anonymous) by its name."""
    classes: set[type[exp.Func]] = set()
    for name in names:
        try:
            probe = sqlglot.parse_one(f"SELECT {name}(a, b)", read=_DIALECT, error_level=ErrorLevel.IGNORE)
        except (ParseError, TokenError):
            continue
        function = probe.find(exp.Func) if probe is not None else None
        if function is not None and not isinstance(function, exp.Anonymous):
            classes.add(type(function))
    return frozenset(classes)


# Syntax, not a call by name: CAST, CASE, [1, 2], {'a': 1}, EXTRACT(...), x IN (...), COUNT(*)...
_SYNTAX_CLASSES: frozenset[type[exp.Func]] = frozenset(
    cls
    for cls in (
        getattr(exp, name, None)
        for name in (
            "Cast",
            "TryCast",
            "Case",
            "If",
            "Array",
            "Struct",
            "Extract",
            "Coalesce",
            "Count",
            "ArrayAgg",
            "Interval",
            "Bracket",
            "Collate",
            "Distinct",
        )
    )
    if isinstance(cls, type) and issubclass(cls, exp.Func)
)
# sqlglot logs a warning quoting the SQL it falls back on ("... contains unsupported syntax"): agent
# text does not belong in the logs, and the guard refuses those statements anyway.
logging.getLogger("sqlglot").setLevel(logging.ERROR)
_ALLOWED_CLASSES = _probe_classes(ALLOWED_FUNCTIONS) | _SYNTAX_CLASSES
_VOLATILE_CLASSES = _probe_classes(_VOLATILE_NAMES) | frozenset(
    cls
    for cls in (getattr(exp, n, None) for n in ("CurrentTimestamp", "CurrentDate", "CurrentTime", "Rand"))
    if isinstance(cls, type)
)
