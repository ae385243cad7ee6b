"""query_metrics: a structured question ("revenue by country last quarter") checked against a model's named
metrics and dimensions (warehouse/models/definitions.py) and compiled into ONE read-only query per dialect.

Each metric aggregates its own relation in one branch, joined many-to-one to the dimensions' relations (so
no row is counted twice); the branches are stacked with UNION ALL and folded per group, and ratios divide
there. Names come from the model (quoted), values are bound parameters, and the statement runs through the
engine's guard and read-only bounds, as run_modelled's do.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlglot import exp

from core.errors import InvalidInput
from warehouse.models.compile import _MARK, Compiler, Statement, as_parameter, render
from warehouse.models.definitions import Condition, Grain, MetricDefinition, Operator, Scalar, join_path
from warehouse.models.run import MOST_BYTES, TIMEOUT_SECONDS, ModelEngine
from warehouse.models.spec import DIALECT_OF_KIND, Dialect, MetricModel

MOST_METRICS = 10
MOST_GROUPS = 5
MOST_FILTERS = 10
MOST_LIMIT = 10_000
MOST_FETCHED_GROUPS = 100_000  # every group is fetched (ordered and cut in Python, compare_to paired there)
RELATIVE = (
    "last_7_days",
    "last_30_days",
    "last_90_days",
    "last_month",
    "last_quarter",
    "last_year",
    "mtd",
    "qtd",
    "ytd",
)
RelativeRange = Literal[RELATIVE]  # type: ignore[valid-type]
Comparison = Literal["previous_period", "previous_year"]
_COUNTS = ("count", "count_distinct", "sum")  # folded with COALESCE(..., 0): no rows means 0


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimension: str = Field(max_length=100, description="a dimension of the model (metrics://{source})")
    op: Operator = "="
    value: Scalar | list[Scalar] = Field(description="one value, or a list for 'in' / 'not in'")


class DateRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: dt.date = Field(description="first day, YYYY-MM-DD (UTC)")
    end: dt.date = Field(description="last day, included whole, YYYY-MM-DD (UTC)")


class MetricQuery(BaseModel):
    """The agent's question, typed; names are checked against the model by plan()."""

    model_config = ConfigDict(extra="forbid")

    metrics: Annotated[list[str], Field(min_length=1, max_length=MOST_METRICS)]
    group_by: Annotated[list[str], Field(max_length=MOST_GROUPS)] = []
    filters: Annotated[list[Filter], Field(max_length=MOST_FILTERS)] = []
    time_range: DateRange | RelativeRange | None = None
    grain: Grain | None = None
    order_by: str | None = Field(default=None, max_length=101)
    limit: int = Field(default=100, ge=1, le=MOST_LIMIT)
    compare_to: Comparison | None = None
    as_of: dt.date | None = None


@dataclass(frozen=True)
class Window:
    """Inclusive UTC days; compared as [start 00:00, end + 1 day 00:00)."""

    start: dt.date
    end: dt.date

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        return dt.datetime.combine(self.start, dt.time()), dt.datetime.combine(
            self.end + dt.timedelta(days=1), dt.time()
        )

    def as_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass
class Plan:
    """A checked question: the base metrics each branch aggregates and what the answer reports."""

    model: MetricModel
    query: MetricQuery
    base: list[str]  # non-ratio metrics the query aggregates (requested, or parts of a requested ratio)
    notes: list[str] = field(default_factory=list)


def _allowed(kind: str, names: Sequence[str]) -> str:
    return f"{kind}: {', '.join(names) or 'none'}"


def _shown(name: Any) -> str:
    return repr(str(name)[:40])


def check(model: MetricModel, query: MetricQuery, source: str = "") -> Plan:
    """The plan of `query` on `model`, or InvalidInput naming the first unknown or unusable name."""
    where = f" in source '{source}'" if source else ""
    metrics, dimensions = model.metrics, model.dimensions
    if not metrics:
        raise InvalidInput(f"model '{model.name}'{where} defines no metrics; use query_database instead")
    for name in query.metrics:
        if name not in metrics:
            raise InvalidInput(f"unknown metric {_shown(name)}{where}; {_allowed('metrics', list(metrics))}")
    if len(set(query.metrics)) != len(query.metrics):
        raise InvalidInput("a metric is listed twice in metrics")
    for name in [*query.group_by, *(each.dimension for each in query.filters)]:
        if name not in dimensions:
            raise InvalidInput(
                f"unknown dimension {_shown(name)}{where}; {_allowed('dimensions', list(dimensions))}"
            )
    if len(set(query.group_by)) != len(query.group_by):
        raise InvalidInput("a dimension is listed twice in group_by")
    if query.grain is not None and query.grain not in model.grains:
        raise InvalidInput(f"grain {_shown(query.grain)} is not offered; {_allowed('grains', model.grains)}")
    for each in query.filters:
        listed = isinstance(each.value, list)
        if each.op in ("in", "not in") and not (listed and 0 < len(each.value) <= 100):  # type: ignore[arg-type]
            raise InvalidInput(f"filter on {each.dimension}: op '{each.op}' takes a list of 1 to 100 values")
        if each.op not in ("in", "not in") and listed:
            raise InvalidInput(
                f"filter on {each.dimension}: op '{each.op}' takes one value; use 'in' for a list"
            )
    base: list[str] = []
    for name in query.metrics:
        definition = metrics[name]
        parts = (
            [definition.numerator, definition.denominator] if definition.aggregation == "ratio" else [name]
        )
        base += [part for part in parts if part is not None and part not in base]
    timed = query.time_range is not None or query.grain is not None or query.compare_to is not None
    if query.compare_to is not None and query.time_range is None:
        raise InvalidInput("compare_to needs a time_range (the window compared with the one before it)")
    if query.compare_to is not None and query.grain is not None:
        raise InvalidInput(
            "compare_to compares totals per group; drop grain, or ask each window with a grain"
        )
    plan = Plan(model, query, base)
    untimed = [name for name in base if metrics[name].time is None]
    if timed and untimed:
        # A current count (products on sale) may stand beside dated metrics under a time_range ("products
        # not sold last month"): it is counted whole, and a note says so. A grain or a comparison would
        # need it per period, which it has not.
        if len(untimed) == len(base) or query.grain is not None or query.compare_to is not None:
            raise InvalidInput(
                f"metric '{untimed[0]}' has no time column, so it takes no grain or compare_to, and a "
                "time_range only beside a dated metric"
            )
        for name in untimed:
            plan.notes.append(
                f"'{name}' has no time column: it counts every row, whatever the time_range "
                "(which limits the dated metrics)"
            )
    for name in base:
        definition = metrics[name]
        assert definition.relation is not None
        for dimension in dict.fromkeys([*query.group_by, *(each.dimension for each in query.filters)]):
            target = dimensions[dimension].relation
            if join_path(model.relations, definition.relation, target) is None:
                usable = [
                    other
                    for other, each in dimensions.items()
                    if join_path(model.relations, definition.relation, each.relation) is not None
                ]
                raise InvalidInput(
                    f"dimension '{dimension}' ({target}) cannot split metric '{name}' ({definition.relation}): "
                    f"no many-to-one join reaches it; {_allowed(f'dimensions for {name}', usable)}"
                )
    if query.order_by is not None:
        column = query.order_by.removeprefix("-")
        columns = [*query.metrics, *query.group_by, *([query.grain] if query.grain else [])]
        if column not in columns:
            raise InvalidInput(
                f"cannot order by {_shown(column)}; order by one of: {', '.join(columns)} (prefix - for descending)"
            )
    for name in query.metrics:
        definition = metrics[name]
        if timed and definition.alternative_times:
            plan.notes.append(
                f"'{name}' is dated by {_time_name(model, definition)} (the model's default); "
                f"it could also be dated by {', '.join(definition.alternative_times)}"
            )
    for dimension in dict.fromkeys([*query.group_by, *(each.dimension for each in query.filters)]):
        declared = dimensions[dimension]
        if declared.alternatives:
            plan.notes.append(
                f"'{dimension}' is {declared.relation}.{declared.column} (the model's default); "
                f"{', '.join(declared.alternatives)} has the same name"
            )
    return plan


def _time_name(model: MetricModel, definition: MetricDefinition) -> str:
    timed = definition.time_column()
    if timed is None:
        return "nothing"
    relation = definition.relation
    if relation is None and definition.numerator is not None:  # a ratio: the relation of its parts
        relation = model.metrics[definition.numerator].relation
    return f"{timed[0] or relation}.{timed[1]}"


# --- time windows ----------------------------------------------------------------------------------


def _quarter_start(day: dt.date) -> dt.date:
    return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _shift_year(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _months_before(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def resolve(range_: DateRange | str, reference: dt.date) -> Window:
    """The inclusive window of a time_range; relative names count back from `reference` (a day)."""
    if isinstance(range_, DateRange):
        if range_.end < range_.start:
            raise InvalidInput("time_range: end is before start")
        return Window(range_.start, range_.end)
    if range_.startswith("last_") and range_.endswith("_days"):
        days = int(range_.removeprefix("last_").removesuffix("_days"))
        return Window(reference - dt.timedelta(days=days - 1), reference)
    if range_ == "last_month":
        start = _months_before(reference, 1)
        return Window(start, reference.replace(day=1) - dt.timedelta(days=1))
    if range_ == "last_quarter":
        this = _quarter_start(reference)
        return Window(_months_before(this, 3), this - dt.timedelta(days=1))
    if range_ == "last_year":
        return Window(dt.date(reference.year - 1, 1, 1), dt.date(reference.year - 1, 12, 31))
    if range_ == "mtd":
        return Window(reference.replace(day=1), reference)
    if range_ == "qtd":
        return Window(_quarter_start(reference), reference)
    assert range_ == "ytd"
    return Window(dt.date(reference.year, 1, 1), reference)


def previous(window: Window, comparison: str) -> Window:
    """The window compared with: the same length just before, or the same days a year earlier."""
    if comparison == "previous_year":
        return Window(_shift_year(window.start, -1), _shift_year(window.end, -1))
    length = window.end - window.start + dt.timedelta(days=1)
    return Window(window.start - length, window.start - dt.timedelta(days=1))


# --- SQL -------------------------------------------------------------------------------------------


def _identifier(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _column(alias: str, name: str) -> exp.Column:
    return exp.column(_identifier(name), table=_identifier(alias))


def _parameter(name: str) -> exp.Expr:
    return exp.column(f"{_MARK}{name}")


def _timestamp(value: exp.Expr) -> exp.Expr:
    return exp.Cast(this=value, to=exp.DataType.build("timestamp"))


def _double(value: exp.Expr) -> exp.Expr:
    return exp.Cast(this=value, to=exp.DataType.build("double"))


class _Values:
    """Bound parameters of one statement: each value gets its own marker (never SQL text)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def bind(self, value: Any) -> exp.Expr:
        name = f"v{len(self.values)}"
        self.values[name] = value
        return _parameter(name)


def _condition(column: exp.Expr, op: str, value: Any, values: _Values) -> exp.Expr:
    if op in ("in", "not in"):
        listed = exp.In(this=column, expressions=[values.bind(each) for each in value])
        return exp.Not(this=listed) if op == "not in" else listed
    bound = values.bind(value)
    kinds = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}
    return kinds[op](this=column, expression=bound)


class _Branch:
    """One metric's relation with the relations it joins, each under its own alias."""

    def __init__(self, model: MetricModel, relation: str) -> None:
        self.model = model
        self.relation = relation
        self.aliases = {relation: "r"}
        self.joins: list[tuple[exp.Expr, exp.Expr]] = []

    def table(self, relation: str, alias: str) -> exp.Expr:
        schema, _, table = self.model.relations[relation].table.rpartition(".")
        return exp.Table(
            this=_identifier(table),
            db=_identifier(schema) if schema else None,
            alias=exp.TableAlias(this=_identifier(alias)),
        )

    def alias(self, relation: str) -> str:
        path = join_path(self.model.relations, self.relation, relation)
        assert path is not None  # check() refused unreachable dimensions
        for source, column, joined in path:
            if joined in self.aliases:
                continue
            alias = f"j{len(self.aliases)}"
            key = self.model.relations[joined].key
            assert key is not None
            on = exp.EQ(this=_column(alias, key), expression=_column(self.aliases[source], column))
            self.joins.append((self.table(joined, alias), on))
            self.aliases[joined] = alias
        return self.aliases[relation]

    def column(self, relation: str | None, name: str) -> exp.Column:
        return _column(self.alias(relation or self.relation), name)


def _bucket(compiler: Compiler, value: exp.Expr, grain: str) -> exp.Expr:
    """The start of `value`'s day, week (Monday), month, quarter or year (a timestamp, or a date on MySQL's
    quarter and year); the answer's columns cast it to a date outside the GROUP BY, where PostgreSQL
    plans a date cast's groups worse than the truncated timestamp's."""
    if compiler.dialect == "mysql" and grain in ("quarter", "year"):
        year_start = exp.Anonymous(
            this="MAKEDATE",
            expressions=[exp.Anonymous(this="YEAR", expressions=[value]), exp.Literal.number(1)],
        )
        if grain == "year":
            return exp.Cast(this=year_start, to=exp.DataType.build("date"))
        months = exp.Mul(
            this=exp.Paren(
                this=exp.Sub(
                    this=exp.Anonymous(this="QUARTER", expressions=[value.copy()]),
                    expression=exp.Literal.number(1),
                )
            ),
            expression=exp.Literal.number(3),
        )
        shifted = exp.DateAdd(this=year_start, expression=exp.Paren(this=months), unit=exp.var("MONTH"))
        return exp.Cast(this=shifted, to=exp.DataType.build("date"))
    start: exp.Expr
    if compiler.dialect != "mysql":
        start = exp.TimestampTrunc(this=value, unit=exp.var(grain.upper()))
    else:
        start = compiler.bucket(value, grain)
    return start


def _aggregate(definition: MetricDefinition, branch: _Branch, only: exp.Expr | None) -> exp.Expr:
    """The metric's aggregate; `only` (its own filter, when the branch serves other metrics too) limits
    the rows it aggregates with CASE WHEN ... END."""
    kind = definition.aggregation
    column: exp.Expr | None = branch.column(None, definition.column) if definition.column else None
    if only is not None:
        column = exp.Case().when(only, column if column is not None else exp.Literal.number(1), copy=False)
    if kind == "count":
        return exp.Count(this=column if column is not None else exp.Star())
    assert column is not None
    if kind == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[column]))
    if kind == "avg":
        return _double(exp.Avg(this=column))
    return _double(exp.Sum(this=column))  # summed exactly (DECIMAL), then a double on every engine


def _branches(plan: Plan) -> list[list[str]]:
    """The base metrics grouped by relation and time column: each group is read by one scan."""
    groups: dict[tuple[str | None, str | None], list[str]] = {}
    for name in plan.base:
        definition = plan.model.metrics[name]
        groups.setdefault((definition.relation, definition.time), []).append(name)
    return list(groups.values())


def compile_query(plan: Plan, dialect: Dialect, window: Window | None, compared: Window | None) -> Statement:
    """The one statement answering `plan` in `dialect`, its values bound.

    Metrics on the same relation and time column share one scan; with one such group the statement is a
    single GROUP BY, with several their branches are stacked and folded per group."""
    model, query = plan.model, plan.query
    compiler = Compiler(model, dialect)
    values = _Values()
    dimensions = [model.dimensions[name] for name in query.group_by]
    groups = _branches(plan)
    single = len(groups) == 1
    branches: list[exp.Select] = []
    aggregates: dict[str, exp.Expr] = {}
    for members in groups:
        first = model.metrics[members[0]]
        assert first.relation is not None
        branch = _Branch(model, first.relation)
        names = [_identifier(name) if single else f"d{number}" for number, name in enumerate(query.group_by)]
        columns: list[exp.Expr] = [
            exp.alias_(branch.column(each.relation, each.column), name, copy=False)
            for each, name in zip(dimensions, names, strict=True)
        ]
        keys: list[exp.Expr] = [branch.column(each.relation, each.column) for each in dimensions]
        conditions: list[exp.Expr] = []
        own: dict[str, exp.Expr | None] = {}
        for name in members:
            filters = [
                _condition(branch.column(None, each.column), each.op, _scalar(each), values)
                for each in model.metrics[name].filter
            ]
            merged = exp.and_(*filters, copy=False) if filters else None
            if len(members) == 1 and merged is not None:
                conditions.append(merged)  # its own scan: the filter is the WHERE (index-friendly)
                merged = None
            own[name] = merged
        for each in query.filters:
            dimension = model.dimensions[each.dimension]
            column = branch.column(dimension.relation, dimension.column)
            conditions.append(_condition(column, each.op, each.value, values))
        timed = first.time_column()
        when = _timestamp(branch.column(timed[0], timed[1])) if timed is not None else None
        if window is not None and when is not None:
            start, end_before = window.bounds()
            current = exp.and_(
                exp.GTE(this=when.copy(), expression=_timestamp(values.bind(start))),
                exp.LT(this=when.copy(), expression=_timestamp(values.bind(end_before))),
                copy=False,
            )
            if compared is not None:
                earlier, earlier_end = compared.bounds()
                before = exp.and_(
                    exp.GTE(this=when.copy(), expression=_timestamp(values.bind(earlier))),
                    exp.LT(this=when.copy(), expression=_timestamp(values.bind(earlier_end))),
                    copy=False,
                )
                conditions.append(exp.Paren(this=exp.or_(current, before, copy=False)))
                label = (
                    exp.Case()
                    .when(
                        exp.GTE(this=when.copy(), expression=_timestamp(values.bind(start))),
                        exp.Literal.string("current"),
                        copy=False,
                    )
                    .else_(exp.Literal.string("previous"), copy=False)
                )
                columns.append(exp.alias_(label, "period" if single else "p", copy=False))
                keys.append(label.copy())
            else:
                conditions.append(current)
        if query.grain is not None and when is not None:
            bucket = _bucket(compiler, when.copy(), query.grain)
            columns.append(exp.alias_(bucket, _identifier(query.grain) if single else "b", copy=False))
            keys.append(bucket.copy())
        for name in members:
            aggregates[name] = _aggregate(model.metrics[name], branch, own[name])
        if not single:
            for number, name in enumerate(plan.base):
                kind = model.metrics[name].aggregation
                # Typed NULLs: PostgreSQL types an untyped NULL column of stacked branches as text.
                empty = exp.Cast(
                    this=exp.null(), to=exp.DataType.build("bigint" if kind.startswith("count") else "double")
                )
                columns.append(
                    exp.alias_(aggregates[name] if name in members else empty, f"m{number}", copy=False)
                )
        select = exp.Select(expressions=columns).from_(branch.table(first.relation, "r"), copy=False)
        for table, on in branch.joins:
            select = select.join(table, on=on, join_type="left", copy=False)
        if conditions:
            select = select.where(exp.and_(*conditions, copy=False), copy=False)
        if keys:
            select = select.group_by(*keys, copy=False)
        branches.append(select)

    def folded(name: str) -> exp.Expr:
        value: exp.Expr = (
            aggregates[name].copy()
            if single
            else exp.Max(this=exp.column(f"m{plan.base.index(name)}", table="u"))
        )
        if model.metrics[name].aggregation in _COUNTS:
            value = exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
        return value

    outputs: list[exp.Expr] = []
    for name in query.metrics:
        definition = model.metrics[name]
        if definition.aggregation == "ratio":
            assert definition.numerator is not None and definition.denominator is not None
            output: exp.Expr = exp.Div(
                this=_double(folded(definition.numerator)),
                expression=exp.Nullif(
                    this=_double(folded(definition.denominator)), expression=exp.Literal.number(0)
                ),
            )
        else:
            output = folded(name)
        outputs.append(exp.alias_(output, _identifier(name), copy=False))
    if single:
        statement = branches[0]
        statement.set("expressions", [*statement.expressions, *outputs])
    else:
        stacked: exp.Query = branches[0]
        for other in branches[1:]:
            stacked = exp.union(stacked, other, distinct=False, copy=False)
        keys = [exp.column(f"d{number}", table="u") for number in range(len(query.group_by))]
        heads: list[exp.Expr] = [
            exp.alias_(key.copy(), _identifier(name), copy=False)
            for key, name in zip(keys, query.group_by, strict=True)
        ]
        if query.grain is not None:
            keys.append(exp.column("b", table="u"))
            heads.append(exp.alias_(exp.column("b", table="u"), _identifier(query.grain), copy=False))
        if compared is not None:
            keys.append(exp.column("p", table="u"))
            heads.append(exp.alias_(exp.column("p", table="u"), "period", copy=False))
        statement = exp.Select(expressions=[*heads, *outputs]).from_(
            stacked.subquery("u", copy=False), copy=False
        )
        if keys:
            statement = statement.group_by(*keys, copy=False)
    return render("query_metrics", statement, dialect, values.values)


def _scalar(condition: Condition) -> Any:
    return list(condition.value) if isinstance(condition.value, tuple) else condition.value


def latest_query(plan: Plan, dialect: Dialect) -> Statement:
    """The latest instant among the time columns of the plan's metrics (relative ranges count from it)."""
    columns: list[exp.Expr] = []
    for index, name in enumerate(plan.base):
        definition = plan.model.metrics[name]
        timed = definition.time_column()
        assert definition.relation is not None
        if timed is None:
            continue  # a current count beside dated metrics: the dated ones set the reference day
        branch = _Branch(plan.model, definition.relation)
        latest = exp.select(exp.Max(this=_timestamp(branch.column(timed[0], timed[1])))).from_(
            branch.table(definition.relation, "r")
        )
        for table, on in branch.joins:
            latest = latest.join(table, on=on, join_type="left")
        columns.append(exp.alias_(latest.subquery(), f"t{index}"))
    return render("latest", exp.select(*columns), dialect, {})


# --- running -----------------------------------------------------------------------------------------


async def _fetch(
    engine: ModelEngine, statement: Statement, max_rows: int
) -> tuple[list[dict[str, Any]], bool]:
    guarded = await engine.guarded(statement.sql, statement.parameters)
    result = await engine.run(
        guarded, statement.parameters, timeout=TIMEOUT_SECONDS, max_rows=max_rows, max_bytes=MOST_BYTES
    )
    return list(result.records()), bool(result.truncated)


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _day(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return (as_parameter(value) or value).date()
    if isinstance(value, dt.date):
        return value
    return dt.datetime.fromisoformat(str(value)).date()


def definitions(model: MetricModel, metrics: Sequence[str], dimensions: Sequence[str]) -> dict[str, Any]:
    """What the named metrics and dimensions mean, as the model declares them (ratios with their parts)."""
    used = list(metrics)
    for name in metrics:
        definition = model.metrics[name]
        used += [part for part in (definition.numerator, definition.denominator) if part and part not in used]
    return {
        "metrics": {
            name: model.metrics[name].model_dump(mode="json", exclude_defaults=True) for name in used
        },
        "dimensions": {
            name: model.dimensions[name].model_dump(mode="json", exclude_defaults=True) for name in dimensions
        },
    }


async def query_metrics(
    engine: ModelEngine, model: MetricModel, query: MetricQuery, *, source: str = ""
) -> dict[str, Any]:
    """Answer `query` on `engine` from `model`'s definitions: rows, the SQL, definitions, resolved dates."""
    plan = check(model, query, source)
    dialect = DIALECT_OF_KIND.get(engine.kind)
    if dialect is None:
        raise InvalidInput(f"source '{source}' has an engine ({engine.kind}) that models do not compile to")
    statements: list[Statement] = []
    window = compared = None
    resolved: dict[str, Any] | None = None
    if query.time_range is not None:
        reference = query.as_of
        if reference is None and isinstance(query.time_range, str):
            statement = latest_query(plan, dialect)
            statements.append(statement)
            (row,), _ = await _fetch(engine, statement, 1)
            found = [day for day in map(_day, row.values()) if day is not None]
            if not found:
                raise InvalidInput("the metrics have no dated rows yet, so a relative time_range has no end")
            reference = max(found)
        window = resolve(query.time_range, reference or dt.date.today())
        resolved = dict[str, Any](window.as_json())
        if isinstance(query.time_range, str):
            resolved.update(
                {"relative": query.time_range, "as_of": reference.isoformat() if reference else None}
            )
            if query.as_of is None:
                plan.notes.append(
                    f"'{query.time_range}' counts back from {reference}, the latest date in the data; pass as_of to fix it"
                )
        if query.compare_to is not None:
            compared = previous(window, query.compare_to)
    statement = compile_query(plan, dialect, window, compared)
    statements.append(statement)
    rows, truncated = await _fetch(engine, statement, MOST_FETCHED_GROUPS)
    if truncated:
        raise InvalidInput(
            f"more than {MOST_FETCHED_GROUPS:,} groups; filter, narrow time_range, or group by fewer dimensions"
        )
    answer_rows = [{key: _plain(value) for key, value in row.items()} for row in rows]
    if compared is not None:
        answer_rows = _compared(query, answer_rows)
    answer_rows = _ordered(query, answer_rows)
    more = len(answer_rows) > query.limit
    answer: dict[str, Any] = {
        "source": source,
        "model": model.name,
        "model_version": model.version,
        "metrics": list(query.metrics),
        "group_by": list(query.group_by),
        "grain": query.grain,
        "time_range": resolved,
        "rows": answer_rows[: query.limit],
        "row_count": min(len(answer_rows), query.limit),
        "truncated": more,
        "definitions": definitions(
            model, query.metrics, [*query.group_by, *(f.dimension for f in query.filters)]
        ),
        "notes": plan.notes,
        "sql": statement.sql,
        "parameters": {key: _plain(value) for key, value in statement.parameters.items()},
        "dialect": dialect,
    }
    if compared is not None:
        answer["compare_to"] = {"kind": query.compare_to, **compared.as_json()}
    if len(statements) > 1:
        answer["latest_sql"] = statements[0].sql
    return answer


def _compared(query: MetricQuery, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of both windows paired per group: each metric, its previous value, change and percentage."""
    paired: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row[name] for name in query.group_by)
        paired.setdefault(key, {})[row["period"]] = row
    answer = []
    for key, periods in paired.items():
        entry: dict[str, Any] = dict(zip(query.group_by, key, strict=True))
        for name in query.metrics:
            now = (periods.get("current") or {}).get(name)
            before = (periods.get("previous") or {}).get(name)
            change = None if now is None or before is None else now - before
            entry[name] = now
            entry[f"{name}_previous"] = before
            entry[f"{name}_change"] = change
            entry[f"{name}_change_pct"] = None if change is None or not before else change / abs(before) * 100
        answer.append(entry)
    return answer


def _ordered(query: MetricQuery, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by `order_by` (descending with -), then by the groups and the period; missing values last.

    Sorted here rather than in SQL: an ORDER BY on the aggregate leads PostgreSQL to sort every input row
    for a GroupAggregate where hashing the few groups is far cheaper (and every engine orders NULLs alike)."""
    keys = [*query.group_by, *([query.grain] if query.grain else [])]
    rows = sorted(rows, key=lambda row: tuple(_sortable(row[name]) for name in keys))
    if query.order_by is not None:
        name = query.order_by.removeprefix("-")
        descending = query.order_by.startswith("-")
        present = [row for row in rows if row[name] is not None]
        present.sort(key=lambda row: row[name], reverse=descending)
        rows = present + [row for row in rows if row[name] is None]
    return rows


def _sortable(value: Any) -> tuple[int, Any]:
    return (1, "") if value is None else (0, value)


def metric_catalogue(model: MetricModel) -> dict[str, Any]:
    """metrics://{source}: every named metric and dimension of the model, with its version."""
    return {
        "model": model.name,
        "version": model.version,
        "metrics": {
            name: each.model_dump(mode="json", exclude_defaults=True) for name, each in model.metrics.items()
        },
        "dimensions": {
            name: {
                **each.model_dump(mode="json", exclude_defaults=True),
                "reaches": _reaching(model, each.relation),
            }
            for name, each in model.dimensions.items()
        },
        "grains": list(model.grains),
        "entities": [name for name, each in model.relations.items() if each.key is not None],
        "relative_ranges": list(RELATIVE),
        "comparisons": ["previous_period", "previous_year"],
        "filter_ops": ["=", "!=", "<", "<=", ">", ">=", "in", "not in"],
    }


def _reaching(model: MetricModel, relation: str) -> list[str]:
    """The metrics a dimension on `relation` can split."""
    return [
        name
        for name, each in model.metrics.items()
        if each.relation is not None and join_path(model.relations, each.relation, relation) is not None
    ]
