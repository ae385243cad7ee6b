"""Named metrics and dimensions of a metric model (its `relations:`, `metrics:` and `dimensions:` sections):
what "revenue" or "country" means, declared once, validated at load, compiled by warehouse/models/metrics.py.

A relation is a table with its key and its many-to-one joins (`joins: {orders: order_id}`: this relation's
`order_id` holds an `orders` key). A metric aggregates one relation's column (or is the ratio of two metrics)
and may only be split by dimensions reachable along those joins, so a join never repeats a metric's rows.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Aggregation = Literal["sum", "count", "count_distinct", "avg", "ratio"]
Operator = Literal["=", "!=", "<", "<=", ">", ">=", "in", "not in"]
Grain = Literal["day", "week", "month", "quarter", "year"]
GRAINS: tuple[Grain, ...] = ("day", "week", "month", "quarter", "year")
Scalar = str | int | float | bool
MOST_IN_VALUES = 100

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")
_QUALIFIED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\.[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _name(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
        raise ValueError(f"'{str(value)[:40]}' is not a name (letters, digits and _)")
    return value


class Condition(BaseModel):
    """A structured filter: `column op value` on the metric's own relation (never SQL text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]

    @field_validator("column")
    @classmethod
    def _column_name(cls, value: str) -> str:
        return _name(value) or value

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        listed = isinstance(self.value, tuple)
        if self.op in ("in", "not in") and not (listed and 0 < len(self.value) <= MOST_IN_VALUES):  # type: ignore[arg-type]
            raise ValueError(f"op '{self.op}' takes a list of 1 to {MOST_IN_VALUES} values")
        if self.op not in ("in", "not in") and listed:
            raise ValueError(f"op '{self.op}' takes one value; use 'in' for a list")
        return self


class Relation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    key: str | None = None
    joins: dict[str, str] = Field(default_factory=dict)  # joined relation -> this relation's column

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(f"'{value[:40]}' is not a table name (table or schema.table)")
        return value

    @field_validator("key")
    @classmethod
    def _key_name(cls, value: str | None) -> str | None:
        return _name(value)

    @field_validator("joins")
    @classmethod
    def _join_names(cls, value: dict[str, str]) -> dict[str, str]:
        for target, column in value.items():
            _name(target), _name(column)
        return value


class MetricDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1, max_length=500)
    aggregation: Aggregation
    relation: str | None = None
    column: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    filter: tuple[Condition, ...] = ()
    time: str | None = None
    # Other instants the metric could be dated by ("orders.order_date"): named in a note when it is dated.
    alternative_times: tuple[str, ...] = ()

    @field_validator("relation", "column", "numerator", "denominator")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return _name(value)

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        # A column of the relation, or relation.column of a relation reached by its joins.
        if value is not None and not (_NAME.match(value) or _QUALIFIED.match(value)):
            raise ValueError(f"'{value[:40]}' is neither a column nor relation.column")
        return value

    def time_column(self) -> tuple[str | None, str] | None:
        """(relation or None for the metric's own, column) of the metric's time."""
        if self.time is None:
            return None
        relation, _, column = self.time.rpartition(".")
        return (relation or None), column

    @field_validator("alternative_times")
    @classmethod
    def _qualified(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _QUALIFIED.match(name):
                raise ValueError(f"'{name[:40]}' is not relation.column")
        return value

    @model_validator(mode="after")
    def _shape(self) -> MetricDefinition:
        if self.aggregation == "ratio":
            if not (self.numerator and self.denominator):
                raise ValueError("a ratio needs numerator and denominator (names of metrics)")
            if self.relation or self.column or self.filter:
                raise ValueError("a ratio takes numerator and denominator only (no relation, column, filter)")
            return self
        if self.numerator or self.denominator:
            raise ValueError("numerator and denominator belong to aggregation: ratio")
        if not self.relation:
            raise ValueError(f"aggregation {self.aggregation} needs a relation")
        if self.aggregation != "count" and not self.column:
            raise ValueError(f"aggregation {self.aggregation} needs a column")
        return self


class Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    relation: str
    column: str
    description: str = ""
    # Other relations with a column of this meaning ("shipments.status"): named in a note when it is used.
    alternatives: tuple[str, ...] = ()

    @field_validator("relation", "column")
    @classmethod
    def _names(cls, value: str) -> str:
        return _name(value) or value

    @field_validator("alternatives")
    @classmethod
    def _qualified(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _QUALIFIED.match(name):
                raise ValueError(f"'{name[:40]}' is not relation.column")
        return value


def check_semantics(
    relations: Mapping[str, Relation],
    metrics: Mapping[str, MetricDefinition],
    dimensions: Mapping[str, Dimension],
) -> None:
    """Raise ValueError (one line, naming the field) unless every name the sections use resolves."""
    known = ", ".join(relations) or "none"
    for name, relation in relations.items():
        _name(name)
        for target in relation.joins:
            if target not in relations:
                raise ValueError(f"relations.{name}.joins: '{target}' is not a relation; relations: {known}")
            if relations[target].key is None:
                raise ValueError(f"relations.{name}.joins.{target}: relation '{target}' declares no key")
    for name, metric in metrics.items():
        _name(name)
        if name in GRAINS or name in dimensions:
            raise ValueError(f"metrics.{name}: the name is taken by a grain or a dimension")
        if metric.aggregation == "ratio":
            for side in ("numerator", "denominator"):
                part = getattr(metric, side)
                if part not in metrics or metrics[part].aggregation == "ratio":
                    raise ValueError(
                        f"metrics.{name}.{side}: '{part}' is not a metric that aggregates a relation"
                    )
        elif metric.relation not in relations:
            raise ValueError(
                f"metrics.{name}.relation: '{metric.relation}' is not a relation; relations: {known}"
            )
        elif metric.relation is not None:
            timed = metric.time_column()
            if timed is not None and timed[0] is not None:
                if timed[0] not in relations or join_path(relations, metric.relation, timed[0]) is None:
                    raise ValueError(
                        f"metrics.{name}.time: '{timed[0]}' is not a relation reached from '{metric.relation}'"
                    )
    for name, dimension in dimensions.items():
        _name(name)
        if name in GRAINS:
            raise ValueError(f"dimensions.{name}: the name is taken by a grain")
        if dimension.relation not in relations:
            raise ValueError(
                f"dimensions.{name}.relation: '{dimension.relation}' is not a relation; relations: {known}"
            )


def join_path(
    relations: Mapping[str, Relation], start: str, target: str
) -> list[tuple[str, str, str]] | None:
    """The many-to-one joins from `start` to `target` as (relation, its column, joined relation), shortest
    first and in declaration order; [] when they are the same relation, None when `target` is unreachable."""
    if start == target:
        return []
    came: dict[str, tuple[str, str, str]] = {}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for joined, column in relations[current].joins.items():
            if joined == start or joined in came:
                continue
            came[joined] = (current, column, joined)
            if joined == target:
                path = [came[joined]]
                while path[0][0] != start:
                    path.insert(0, came[path[0][0]])
                return path
            queue.append(joined)
    return None
