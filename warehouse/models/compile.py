"""The modelled analyses' aggregate queries, written once as sqlglot expression trees and generated for
PostgreSQL, MySQL/MariaDB or DuckDB. Each query returns the shape the hard-wired runners in
warehouse/aggregates.py hand to analytics/: aggregates, or one row per customer.

Identifiers come from the validated model (quoted here), relation SELECTs were checked by the dialect's
guard at load, and values are bound parameters (`%(name)s`, as every engine's guard expects them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from warehouse.models.spec import Dialect, FlagChurn, InactiveChurn, MetricModel, Part

SECONDS_PER_DAY = 86_400
# sqlglot has no placeholder that renders as `%(name)s` in every dialect: a marker identifier is
# generated and swapped for the placeholder in the text (a marker cannot occur in a quoted model name).
_MARK = "amcp_parameter__"


@dataclass(frozen=True)
class Statement:
    """One compiled query: its text in the engine's dialect, the parameters it binds, its result columns."""

    name: str
    sql: str
    parameters: dict[str, Any] = field(default_factory=dict)


def _parameter(name: str) -> exp.Expr:
    return exp.column(f"{_MARK}{name}")


def render(name: str, query: exp.Expr, dialect: Dialect, parameters: dict[str, Any]) -> Statement:
    text = query.sql(dialect=dialect)
    used = {}
    for key, value in parameters.items():
        marker = f"{_MARK}{key}"
        if marker in text:
            text = text.replace(marker, f"%({key})s")
            used[key] = value
    return Statement(name, text, used)


def _identifier(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _column(alias: str, name: str) -> exp.Column:
    return exp.column(_identifier(name), table=_identifier(alias))


def _timestamp(value: exp.Expr) -> exp.Expr:
    return exp.Cast(this=value, to=exp.DataType.build("timestamp"))


def _number(value: float | int) -> exp.Expr:
    return exp.Literal.number(value)


def _case(condition: exp.Expr, then: exp.Expr, otherwise: exp.Expr | None) -> exp.Case:
    case = exp.Case().when(condition, then)
    return case.else_(otherwise) if otherwise is not None else case


def _one_if(condition: exp.Expr) -> exp.Case:
    return _case(condition, _number(1), _number(0))


class Compiler:
    """The queries of one model in one dialect."""

    def __init__(self, model: MetricModel, dialect: Dialect) -> None:
        self.model = model
        self.dialect = dialect

    # --- dialect fragments -------------------------------------------------------------------------

    def seconds_between(self, start: exp.Expr, end: exp.Expr) -> exp.Expr:
        """Seconds from `start` to `end`, fractions included.

        Per dialect: sqlglot writes TIMESTAMPDIFF for PostgreSQL (which has none) and MySQL's EXTRACT
        has no EPOCH, so MySQL counts microseconds and the others take the epoch of the interval."""
        if self.dialect == "mysql":
            micro = exp.TimestampDiff(this=end, expression=start, unit=exp.var("MICROSECOND"))
            return exp.Div(this=micro, expression=_number(1_000_000))
        return exp.Extract(
            this=exp.var("EPOCH"), expression=exp.Paren(this=exp.Sub(this=end, expression=start))
        )

    def bucket(self, value: exp.Expr, grain: str) -> exp.Expr:
        """The start of `value`'s hour, day, week (Monday) or month, as a timestamp.

        Per dialect: MySQL has no DATE_TRUNC (and sqlglot does not emulate it), so its buckets are
        built from the date and HOUR/WEEKDAY/DAYOFMONTH; PostgreSQL and DuckDB truncate."""
        if self.dialect != "mysql":
            return exp.TimestampTrunc(this=value, unit=exp.var(grain.upper()))
        day = exp.Cast(this=value, to=exp.DataType.build("date"))
        if grain == "hour":
            hours = exp.Anonymous(this="HOUR", expressions=[value.copy()])
            start: exp.Expr = exp.DateAdd(this=day, expression=hours, unit=exp.var("HOUR"))
        elif grain == "day":
            start = day
        else:
            back = (
                exp.Anonymous(this="WEEKDAY", expressions=[value.copy()])
                if grain == "week"
                else exp.Sub(
                    this=exp.Anonymous(this="DAYOFMONTH", expressions=[value.copy()]), expression=_number(1)
                )
            )
            start = exp.DateSub(this=day, expression=back, unit=exp.var("DAY"))
        return _timestamp(start)

    @staticmethod
    def month_key(value: exp.Expr) -> exp.Expr:
        """'YYYY-MM' of an instant (TO_CHAR, DATE_FORMAT or STRFTIME)."""
        return exp.TimeToStr(this=value, format=exp.Literal.string("%Y-%m"))

    @staticmethod
    def months_between(start: exp.Expr, end: exp.Expr) -> exp.Expr:
        """Calendar months from `start`'s month to `end`'s."""

        def part(unit: str, value: exp.Expr) -> exp.Expr:
            return exp.Extract(this=exp.var(unit), expression=value.copy())

        years = exp.Sub(this=part("YEAR", end), expression=part("YEAR", start))
        months = exp.Sub(this=part("MONTH", end), expression=part("MONTH", start))
        return exp.Add(this=exp.Mul(this=exp.Paren(this=years), expression=_number(12)), expression=months)

    def relation(self, part: Part, alias: str) -> exp.Expr:
        """A FROM item for a model part: its table, or its SELECT as a derived table."""
        if part.is_select():
            query = sqlglot.parse_one(part.relation, read=self.dialect)
            assert isinstance(query, exp.Query)  # the guards accepted it as one SELECT at load
            return query.subquery(_identifier(alias))
        schema, _, table = part.relation.rpartition(".")
        return exp.Table(
            this=_identifier(table),
            db=_identifier(schema) if schema else None,
            alias=exp.TableAlias(this=_identifier(alias)),
        )

    # --- shared building blocks --------------------------------------------------------------------

    def customers(self, segment: str | None) -> exp.Select:
        """customer_key, signup_time, segment of every customer."""
        part = self.model.customer
        columns: list[exp.Expr] = [
            exp.alias_(_column("c", part.key), "customer_key"),
            exp.alias_(_timestamp(_column("c", part.signup_time)), "signup_time"),
            exp.alias_(_column("c", segment) if segment else exp.Literal.string("all"), "segment"),
        ]
        churn = self.model.churn
        if isinstance(churn, FlagChurn):
            columns.append(
                exp.alias_(_one_if(exp.Is(this=_column("c", churn.flag), expression=exp.true())), "flagged")
            )
            columns.append(exp.alias_(_timestamp(_column("c", churn.date)), "churn_date"))
        return exp.select(*columns).from_(self.relation(part, "c"))

    def churn_state(self, segment: str | None) -> exp.Select:
        """Per customer: customer_key, signup_time, segment, churned (1/0) and churn_time.

        Flag form: churned is the flag (NULL counts as not churned) and churn_time the date column, over
        every customer, as the telecom tables have it. Inactive form: customers who signed up by as_of;
        churned when their last activity up to as_of (or their sign-up, with none) is at least
        inactive_days before as_of, churn_time then being that last activity."""
        churn = self.model.churn
        base = self.customers(segment).subquery("c")
        if isinstance(churn, FlagChurn):
            return exp.select(
                "c.customer_key",
                "c.signup_time",
                "c.segment",
                exp.alias_(exp.column("flagged", table="c"), "churned"),
                exp.alias_(exp.column("churn_date", table="c"), "churn_time"),
            ).from_(base)
        assert isinstance(churn, InactiveChurn) and self.model.activity is not None
        activity = self.model.activity
        as_of = _parameter("as_of")
        when = _timestamp(_column("a", activity.time))
        last = (
            exp.select(
                exp.alias_(_column("a", activity.customer_key), "customer_key"),
                exp.alias_(exp.Max(this=when), "last_time"),
            )
            .from_(self.relation(activity, "a"))
            .where(exp.LTE(this=when.copy(), expression=_timestamp(as_of)))
            .group_by(_column("a", activity.customer_key))
        )
        seen = exp.Coalesce(
            this=exp.column("last_time", table="l"), expressions=[exp.column("signup_time", table="c")]
        )
        lapsed = exp.GTE(
            this=self.seconds_between(seen, _timestamp(as_of.copy())),
            expression=_number(churn.inactive_days * SECONDS_PER_DAY),
        )
        return (
            exp.select(
                "c.customer_key",
                "c.signup_time",
                "c.segment",
                exp.alias_(_one_if(lapsed), "churned"),
                exp.alias_(_case(lapsed.copy(), seen.copy(), None), "churn_time"),
            )
            .from_(base)
            .join(
                last.subquery("l"),
                on=exp.EQ(
                    this=exp.column("customer_key", table="l"),
                    expression=exp.column("customer_key", table="c"),
                ),
                join_type="left",
            )
            .where(
                exp.LTE(this=exp.column("signup_time", table="c"), expression=_timestamp(_parameter("as_of")))
            )
        )

    def in_period(self, value: exp.Expr) -> exp.Expr:
        """`value` within [start_at, end_before) where those parameters are given (NULL: open)."""
        start, end = _timestamp(_parameter("start_at")), _timestamp(_parameter("end_before"))
        return exp.and_(
            exp.or_(exp.Is(this=start, expression=exp.null()), exp.GTE(this=value, expression=start.copy())),
            exp.or_(
                exp.Is(this=end, expression=exp.null()), exp.LT(this=value.copy(), expression=end.copy())
            ),
        )

    def paid(self, by: str | None = None) -> exp.Select:
        """Revenue per paying customer in the period (and per month or kind when `by` says so):
        customer_key, [group,] amount, transactions."""
        revenue = self.model.revenue
        assert revenue is not None
        when = _timestamp(_column("r", revenue.time))
        keys: list[exp.Expr] = [_column("r", revenue.customer_key)]
        columns: list[exp.Expr] = [exp.alias_(_column("r", revenue.customer_key), "customer_key")]
        if by == "month":
            keys.append(self.month_key(when.copy()))
            columns.append(exp.alias_(self.month_key(when.copy()), "grouping"))
        elif by == "kind":
            assert revenue.kind is not None
            keys.append(_column("r", revenue.kind))
            columns.append(exp.alias_(_column("r", revenue.kind), "grouping"))
        # Summed exactly (DECIMAL in every engine) and then made a double: equal totals stay equal, so rank
        # tests see the same ties on every engine.
        amount = exp.Cast(this=exp.Sum(this=_column("r", revenue.amount)), to=exp.DataType.build("double"))
        columns += [
            exp.alias_(amount, "amount"),
            exp.alias_(exp.Count(this=exp.Star()), "transactions"),
        ]
        return (
            exp.select(*columns)
            .from_(self.relation(revenue, "r"))
            .where(self.in_period(when))
            .group_by(*keys)
        )

    # --- the analyses ------------------------------------------------------------------------------

    def as_of(self) -> exp.Select:
        """The latest instant in the data, per part (the caller takes the greatest that is not NULL)."""
        columns: list[exp.Expr] = []

        def latest(part: Part, column: str, name: str) -> None:
            columns.append(
                exp.alias_(
                    exp.select(exp.Max(this=_timestamp(_column("t", column))))
                    .from_(self.relation(part, "t"))
                    .subquery(),
                    name,
                )
            )

        latest(self.model.customer, self.model.customer.signup_time, "signed_up")
        if isinstance(self.model.churn, FlagChurn):
            latest(self.model.customer, self.model.churn.date, "churned")
        if self.model.activity is not None:
            latest(self.model.activity, self.model.activity.time, "active")
        if self.model.revenue is not None:
            latest(self.model.revenue, self.model.revenue.time, "paid")
        return exp.select(*columns)

    def churn_segments(self, segment: str | None) -> exp.Select:
        """segment, customers, churned."""
        return (
            exp.select(
                "s.segment",
                exp.alias_(exp.Count(this=exp.Star()), "customers"),
                exp.alias_(exp.Sum(this=exp.column("churned", table="s")), "churned"),
            )
            .from_(self.churn_state(segment).subquery("s"))
            .group_by("s.segment")
        )

    def churn_monthly(self) -> exp.Select:
        """month, new_customers, churned: sign-ups and churns per calendar month."""
        state = self.churn_state(None)
        signed = exp.select(
            exp.alias_(self.month_key(exp.column("signup_time", table="s")), "month"),
            exp.alias_(_number(1), "new_customers"),
            exp.alias_(_number(0), "churned"),
        ).from_(state.subquery("s"))
        lost = (
            exp.select(
                exp.alias_(self.month_key(exp.column("churn_time", table="s")), "month"),
                exp.alias_(_number(0), "new_customers"),
                exp.alias_(_number(1), "churned"),
            )
            .from_(state.copy().subquery("s"))
            .where(
                exp.and_(
                    exp.EQ(this=exp.column("churned", table="s"), expression=_number(1)),
                    exp.column("churn_time", table="s").is_(exp.null()).not_(),
                )
            )
        )
        events = exp.union(signed, lost, distinct=False)
        return (
            exp.select(
                "e.month",
                exp.alias_(exp.Sum(this=exp.column("new_customers", table="e")), "new_customers"),
                exp.alias_(exp.Sum(this=exp.column("churned", table="e")), "churned"),
            )
            .from_(events.subquery("e"))
            .group_by("e.month")
        )

    def arpu_level(self, level: str, segment: str | None) -> exp.Select:
        """key, customers, revenue, variance, transactions for one level: segment, month or kind."""
        per_customer = exp.column("amount", table="p")

        def aggregate(query: exp.Select, key: exp.Expr) -> exp.Select:
            return query.select(
                exp.alias_(key, "key"),
                exp.alias_(exp.Count(this=exp.Star()), "customers"),
                exp.alias_(exp.Sum(this=per_customer.copy()), "revenue"),
                exp.alias_(exp.Anonymous(this="VAR_SAMP", expressions=[per_customer.copy()]), "variance"),
                exp.alias_(exp.Sum(this=exp.column("transactions", table="p")), "transactions"),
                append=False,
            )

        if level == "segment":
            query = (
                exp.select("*")
                .from_(self.paid().subquery("p"))
                .join(
                    self.customers(segment).subquery("c"),
                    on=exp.EQ(
                        this=exp.column("customer_key", table="c"),
                        expression=exp.column("customer_key", table="p"),
                    ),
                )
            )
            return aggregate(query, exp.column("segment", table="c")).group_by(
                exp.column("segment", table="c")
            )
        query = exp.select("*").from_(self.paid(level).subquery("p"))
        return aggregate(query, exp.column("grouping", table="p")).group_by(exp.column("grouping", table="p"))

    def lifetimes(self, segment: str | None) -> exp.Select:
        """segment, lifetime_days, churned, customers: Kaplan-Meier counts. A lifetime runs from sign-up
        to churn_time, or to as_of (churn after as_of is censored there); sign-ups after as_of are left out."""
        as_of = _timestamp(_parameter("as_of"))
        state = exp.column
        end = exp.Least(
            this=exp.Coalesce(this=state("churn_time", table="s"), expressions=[as_of.copy()]),
            expressions=[as_of.copy()],
        )
        days = exp.Floor(
            this=exp.Div(
                this=self.seconds_between(state("signup_time", table="s"), end),
                expression=_number(SECONDS_PER_DAY),
            )
        )
        event = _one_if(
            exp.and_(
                exp.EQ(this=state("churned", table="s"), expression=_number(1)),
                exp.LTE(this=state("churn_time", table="s"), expression=as_of.copy()),
            )
        )
        rows = (
            exp.select(
                exp.alias_(state("segment", table="s"), "segment"),
                exp.alias_(days, "lifetime_days"),
                exp.alias_(event, "churned"),
            )
            .from_(self.churn_state(segment).subquery("s"))
            .where(exp.LTE(this=state("signup_time", table="s"), expression=as_of.copy()))
        )
        return (
            exp.select(
                "l.segment",
                "l.lifetime_days",
                "l.churned",
                exp.alias_(exp.Count(this=exp.Star()), "customers"),
            )
            .from_(rows.subquery("l"))
            .group_by("l.segment", "l.lifetime_days", "l.churned")
        )

    def cohorts(self) -> exp.Select:
        """cohort ('YYYY-MM'), months_lived (NULL: still active at as_of), customers. A customer has lived
        k whole months when sign-up + k months <= churn_time (months added with each engine's calendar
        arithmetic, which clamps 31 Jan + 1 month to the end of February as PostgreSQL does)."""
        as_of = _timestamp(_parameter("as_of"))
        column = exp.column
        months = self.months_between(column("signup_time", table="s"), column("churn_time", table="s"))
        inner = (
            exp.select(
                exp.alias_(self.month_key(column("signup_time", table="s")), "cohort"),
                column("signup_time", table="s"),
                column("churn_time", table="s"),
                exp.alias_(
                    _one_if(
                        exp.and_(
                            exp.EQ(this=column("churned", table="s"), expression=_number(1)),
                            exp.LTE(this=column("churn_time", table="s"), expression=as_of.copy()),
                        )
                    ),
                    "lost",
                ),
                exp.alias_(months, "months"),
            )
            .from_(self.churn_state(None).subquery("s"))
            .where(exp.LTE(this=column("signup_time", table="s"), expression=as_of.copy()))
        )
        shifted = exp.DateAdd(
            this=column("signup_time", table="m"),
            expression=column("months", table="m"),
            unit=exp.var("MONTH"),
        )
        lived = _case(
            exp.EQ(this=column("lost", table="m"), expression=_number(1)),
            exp.Sub(
                this=column("months", table="m"),
                expression=_one_if(exp.GT(this=shifted, expression=column("churn_time", table="m"))),
            ),
            None,
        )
        rows = exp.select("m.cohort", exp.alias_(lived, "months_lived")).from_(inner.subquery("m"))
        return (
            exp.select("k.cohort", "k.months_lived", exp.alias_(exp.Count(this=exp.Star()), "customers"))
            .from_(rows.subquery("k"))
            .group_by("k.cohort", "k.months_lived")
        )

    def revenue_buckets(self, grain: str) -> exp.Select:
        """bucket, revenue, customers (distinct payers), transactions per time bucket in the period."""
        revenue = self.model.revenue
        assert revenue is not None
        when = _timestamp(_column("r", revenue.time))
        rows = (
            exp.select(
                exp.alias_(self.bucket(when, grain), "bucket"),
                exp.alias_(_column("r", revenue.customer_key), "customer_key"),
                exp.alias_(_column("r", revenue.amount), "amount"),
            )
            .from_(self.relation(revenue, "r"))
            .where(self.in_period(when.copy()))
        )
        return (
            exp.select(
                "b.bucket",
                exp.alias_(
                    exp.Cast(
                        this=exp.Sum(this=exp.column("amount", table="b")), to=exp.DataType.build("double")
                    ),
                    "revenue",
                ),
                exp.alias_(
                    exp.Count(this=exp.Distinct(expressions=[exp.column("customer_key", table="b")])),
                    "customers",
                ),
                exp.alias_(exp.Count(this=exp.Star()), "transactions"),
            )
            .from_(rows.subquery("b"))
            .group_by("b.bucket")
        )

    def anomaly_buckets(self, metric: str, grain: str) -> exp.Select:
        """bucket, value, rows per time bucket in the period for anomalies: revenue (the summed amount of
        the bucket's revenue rows), activity (activity rows), active_customers (distinct customers with
        activity) or signups (customers signed up in the bucket); `entries` counts the rows behind it."""
        part: Part
        if metric == "revenue":
            assert self.model.revenue is not None
            part, time = self.model.revenue, self.model.revenue.time
        elif metric == "signups":
            part, time = self.model.customer, self.model.customer.signup_time
        else:
            assert self.model.activity is not None
            part, time = self.model.activity, self.model.activity.time
        when = _timestamp(_column("r", time))
        columns: list[exp.Expr] = [exp.alias_(self.bucket(when, grain), "bucket")]
        if metric == "revenue":
            assert self.model.revenue is not None
            columns.append(exp.alias_(_column("r", self.model.revenue.amount), "amount"))
        if metric == "active_customers":
            assert self.model.activity is not None
            columns.append(exp.alias_(_column("r", self.model.activity.customer_key), "customer_key"))
        rows = exp.select(*columns).from_(self.relation(part, "r")).where(self.in_period(when.copy()))
        value: exp.Expr
        if metric == "revenue":
            value = exp.Cast(
                this=exp.Sum(this=exp.column("amount", table="b")), to=exp.DataType.build("double")
            )
        elif metric == "active_customers":
            value = exp.Count(this=exp.Distinct(expressions=[exp.column("customer_key", table="b")]))
        else:
            value = exp.Count(this=exp.Star())
        return (
            exp.select(
                "b.bucket", exp.alias_(value, "value"), exp.alias_(exp.Count(this=exp.Star()), "entries")
            )
            .from_(rows.subquery("b"))
            .group_by("b.bucket")
        )

    def churn_buckets(self, grain: str) -> exp.Select:
        """bucket, new_customers, churned over all history (the base at a bucket's start needs every
        earlier bucket): sign-ups by sign-up time, churns by churn_time."""
        state = self.churn_state(None)
        signed = exp.select(
            exp.alias_(self.bucket(exp.column("signup_time", table="s"), grain), "bucket"),
            exp.alias_(_number(1), "new_customers"),
            exp.alias_(_number(0), "churned"),
        ).from_(state.subquery("s"))
        lost = (
            exp.select(
                exp.alias_(self.bucket(exp.column("churn_time", table="s"), grain), "bucket"),
                exp.alias_(_number(0), "new_customers"),
                exp.alias_(_number(1), "churned"),
            )
            .from_(state.copy().subquery("s"))
            .where(
                exp.and_(
                    exp.EQ(this=exp.column("churned", table="s"), expression=_number(1)),
                    exp.column("churn_time", table="s").is_(exp.null()).not_(),
                )
            )
        )
        return (
            exp.select(
                "e.bucket",
                exp.alias_(exp.Sum(this=exp.column("new_customers", table="e")), "new_customers"),
                exp.alias_(exp.Sum(this=exp.column("churned", table="e")), "churned"),
            )
            .from_(exp.union(signed, lost, distinct=False).subquery("e"))
            .group_by("e.bucket")
        )

    def features(self, names: list[str]) -> exp.Select:
        """One row per customer with the features `names` (of feature_names): tenure_days runs from sign-up
        to churn_time or as_of; event_count and total_revenue are 0 without activity or revenue; a
        measure is the customer's mean value (NULL without one)."""
        column = exp.column
        if self.model.churn is not None:
            query = exp.select().from_(self.churn_state(None).subquery("s"))
            ended: exp.Expr = exp.Coalesce(
                this=column("churn_time", table="s"), expressions=[_timestamp(_parameter("as_of"))]
            )
        else:
            query = exp.select().from_(self.customers(None).subquery("s"))
            ended = _timestamp(_parameter("as_of"))

        def joined(query: exp.Select, rows: exp.Select, alias: str) -> exp.Select:
            on = exp.EQ(
                this=column("customer_key", table=alias), expression=column("customer_key", table="s")
            )
            return query.join(rows.subquery(alias), on=on, join_type="left")

        def per_customer(part: Part, key: str, value: exp.Expr, alias: str) -> exp.Select:
            return (
                exp.select(exp.alias_(_column("x", key), "customer_key"), exp.alias_(value, "value"))
                .from_(self.relation(part, "x"))
                .group_by(_column("x", key))
            )

        outputs: list[exp.Expr] = []
        for index, name in enumerate(names):
            alias = f"f{index}"
            if name == "tenure_days":
                days = exp.Div(
                    this=self.seconds_between(column("signup_time", table="s"), ended.copy()),
                    expression=_number(float(SECONDS_PER_DAY)),
                )
                outputs.append(exp.alias_(days, name))
                continue
            if name == "is_churned":
                outputs.append(exp.alias_(column("churned", table="s"), name))
                continue
            if name == "event_count" and self.model.activity is not None:
                activity = self.model.activity
                rows = per_customer(activity, activity.customer_key, exp.Count(this=exp.Star()), alias)
                empty: exp.Expr | None = _number(0)
            elif name == "total_revenue" and self.model.revenue is not None:
                revenue = self.model.revenue
                total = exp.Cast(
                    this=exp.Sum(this=_column("x", revenue.amount)), to=exp.DataType.build("double")
                )
                rows = per_customer(revenue, revenue.customer_key, total, alias)
                empty = _number(0)
            else:
                measure = self.model.measures[name]
                mean = exp.Cast(
                    this=exp.Avg(this=_column("x", measure.value)), to=exp.DataType.build("double")
                )
                rows = per_customer(measure, measure.customer_key, mean, alias)
                empty = None
            query = joined(query, rows, alias)
            value: exp.Expr = column("value", table=alias)
            if empty is not None:
                value = exp.Coalesce(this=value, expressions=[empty])
            outputs.append(exp.alias_(value, name))
        # In key order: cross-validation folds follow row order, so every engine must hand the same order.
        return query.select(*outputs).order_by(column("customer_key", table="s"))

    def per_customer(self, metric: str, segment: str | None) -> exp.Select:
        """segment, value: one row per customer for segment_compare.

        arpu: revenue per paying customer in the period; event_count: activities per active customer in
        the period; churn (1/0) and tenure_days (sign-up to churn_time or as_of) of customers who signed
        up in the period."""
        column = exp.column
        if metric == "arpu":
            source = self.paid().subquery("p")
            value: exp.Expr = column("amount", table="p")
        elif metric == "event_count":
            activity = self.model.activity
            assert activity is not None
            when = _timestamp(_column("a", activity.time))
            source = (
                exp.select(
                    exp.alias_(_column("a", activity.customer_key), "customer_key"),
                    exp.alias_(exp.Count(this=exp.Star()), "events"),
                )
                .from_(self.relation(activity, "a"))
                .where(self.in_period(when))
                .group_by(_column("a", activity.customer_key))
                .subquery("p")
            )
            value = column("events", table="p")
        else:
            state = self.churn_state(segment).subquery("s")
            signed = column("signup_time", table="s")
            if metric == "churn":
                value = column("churned", table="s")
            else:
                end = exp.Coalesce(
                    this=column("churn_time", table="s"), expressions=[_timestamp(_parameter("as_of"))]
                )
                value = exp.Div(
                    this=self.seconds_between(signed, end), expression=_number(float(SECONDS_PER_DAY))
                )
            return (
                exp.select(exp.alias_(column("segment", table="s"), "segment"), exp.alias_(value, "value"))
                .from_(state)
                .where(self.in_period(signed.copy()))
            )
        return (
            exp.select(exp.alias_(column("segment", table="c"), "segment"), exp.alias_(value, "value"))
            .from_(source)
            .join(
                self.customers(segment).subquery("c"),
                on=exp.EQ(
                    this=column("customer_key", table="c"), expression=column("customer_key", table="p")
                ),
            )
        )


def feature_names(model: MetricModel) -> list[str]:
    """The per-customer features a model defines (correlation, churn_drivers): tenure_days, then
    event_count, total_revenue and is_churned when it has activity, revenue and churn, then its measures."""
    names = ["tenure_days"]
    if model.activity is not None:
        names.append("event_count")
    if model.revenue is not None:
        names.append("total_revenue")
    if model.churn is not None:
        names.append("is_churned")
    return names + list(model.measures)


def as_parameter(value: dt.datetime | None) -> dt.datetime | None:
    """An instant as the engines bind it: naive UTC (the columns are timestamps without time zone)."""
    if value is not None and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value
