"""Metric models: what a source's customers, activity, revenue and churn are, read from YAML and validated
into frozen pydantic models. Every problem is one line naming the model and the field.

A relation is a table name (`orders`, `shop.orders`) or a read-only SELECT; a SELECT is checked at load
by the guard of each dialect the model will run on (structure and refused words; which tables and
functions a source may read is checked again when the compiled query runs, by the source engine's guard).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import AnalyticsError
from warehouse.models.definitions import GRAINS, Dimension, Grain, MetricDefinition, Relation, check_semantics
from warehouse.sqlguard import FunctionPolicy

Dialect = Literal["postgres", "mysql", "duckdb"]
DIALECTS: tuple[Dialect, ...] = ("postgres", "mysql", "duckdb")
# An engine's `kind` (and a source's) -> the sqlglot dialect its SQL is written in.
DIALECT_OF_KIND: dict[str, Dialect] = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "duckdb": "duckdb",
    "files": "duckdb",
}
SHIPPED = ("telecom", "shop")  # package data: warehouse/models/<name>.yaml
MOST_INACTIVE_DAYS = 3650

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")
_SELECT = re.compile(r"^\s*\(?\s*(select|with)\b", re.IGNORECASE)


class ModelError(AnalyticsError):
    """A metric model that does not load: one line naming the model and the field."""


def _column(value: str) -> str:
    if not isinstance(value, str) or not _COLUMN.match(value):
        raise ValueError(f"'{str(value)[:40]}' is not a column name (letters, digits and _)")
    return value


def _relation(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a table name or a SELECT")
    value = value.strip()
    if _TABLE.match(value) or _SELECT.match(value):
        return value
    raise ValueError(
        f"'{value[:40]}' is neither a table name (table or schema.table) nor a SELECT; "
        "a relation only reads (SELECT ... or WITH ... SELECT ...)"
    )


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    relation: str = Field(description="a table name or a read-only SELECT")

    @field_validator("relation", mode="before")
    @classmethod
    def _a_relation(cls, value: Any) -> str:
        return _relation(value)

    def is_select(self) -> bool:
        return bool(_SELECT.match(self.relation))


class CustomerPart(Part):
    key: str
    signup_time: str
    segments: tuple[str, ...] = ()

    @field_validator("key", "signup_time")
    @classmethod
    def _column_names(cls, value: str) -> str:
        return _column(value)

    @field_validator("segments")
    @classmethod
    def _segment_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            _column(name)
        if len(set(value)) != len(value):
            raise ValueError("lists a segment twice")
        return value


class ActivityPart(Part):
    customer_key: str
    time: str

    @field_validator("customer_key", "time")
    @classmethod
    def _column_names(cls, value: str) -> str:
        return _column(value)


class RevenuePart(Part):
    customer_key: str
    amount: str
    time: str
    kind: str | None = None

    @field_validator("customer_key", "amount", "time", "kind")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else _column(value)


class FlagChurn(BaseModel):
    """Churn recorded in the customer relation: a true/false flag and the date it happened."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: str
    date: str

    @field_validator("flag", "date")
    @classmethod
    def _column_names(cls, value: str) -> str:
        return _column(value)


class InactiveChurn(BaseModel):
    """A customer has churned at `as_of` when they had no activity in the `inactive_days` days before it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inactive_days: int = Field(ge=1, le=MOST_INACTIVE_DAYS)
    as_of: dt.datetime | None = None  # default: the latest instant in the data


class Measure(Part):
    customer_key: str
    value: str
    time: str | None = None

    @field_validator("customer_key", "value", "time")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else _column(value)


class MetricModel(BaseModel):
    """One metric model; frozen, so a source holding it compares by value on reload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    customer: CustomerPart
    activity: ActivityPart | None = None
    revenue: RevenuePart | None = None
    churn: FlagChurn | InactiveChurn | None = None
    measures: dict[str, Measure] = Field(default_factory=dict)
    # Named metrics and dimensions for query_metrics (warehouse/models/definitions.py).
    relations: dict[str, Relation] = Field(default_factory=dict)
    metrics: dict[str, MetricDefinition] = Field(default_factory=dict)
    dimensions: dict[str, Dimension] = Field(default_factory=dict)
    grains: tuple[Grain, ...] = GRAINS

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("churn", mode="before")
    @classmethod
    def _churn_form(cls, value: Any) -> Any:
        if value is None or isinstance(value, (FlagChurn, InactiveChurn)):
            return value
        if not isinstance(value, dict):
            raise ValueError("must be {flag, date} or {inactive_days, as_of}")
        if "flag" in value or "date" in value:
            return FlagChurn.model_validate(value)
        if "inactive_days" in value:
            return InactiveChurn.model_validate(value)
        keys = ", ".join(sorted(map(str, value))) or "nothing"
        raise ValueError(
            f"unknown churn form ({keys}); write {{flag: column, date: column}} or {{inactive_days: N}}"
        )

    @field_validator("measures")
    @classmethod
    def _measure_names(cls, value: dict[str, Measure]) -> dict[str, Measure]:
        for name in value:
            _column(name)
        return value

    @model_validator(mode="after")
    def _churn_needs_activity(self) -> MetricModel:
        if isinstance(self.churn, InactiveChurn) and self.activity is None:
            raise ValueError("churn.inactive_days needs an activity part (what counts as activity)")
        check_semantics(self.relations, self.metrics, self.dimensions)
        return self

    def __hash__(self) -> int:  # frozen, but `measures` is a dict: hash the model's JSON (Source is hashed)
        return hash(self.model_dump_json())

    def parts(self) -> Iterable[tuple[str, Part]]:
        """(field path, part) of every relation the model reads."""
        for name in ("customer", "activity", "revenue"):
            part = getattr(self, name)
            if part is not None:
                yield name, part
        for name, measure in self.measures.items():
            yield f"measures.{name}", measure


def parse_model(text: str | bytes, origin: str, dialects: Iterable[Dialect] = DIALECTS) -> MetricModel:
    """The model in YAML `text`, its relation SELECTs checked by the guards of `dialects`.

    `origin` names the model in errors (a shipped name or a file name, never a full path)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "unreadable"
        raise ModelError(f"model {origin}: not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise ModelError(f"model {origin}: must be a YAML mapping (name:, version:, customer: ...)")
    try:
        model = MetricModel.model_validate(document)
    except pydantic.ValidationError as error:
        raise ModelError(f"model {origin}: {_explain(error)}") from None
    for path, part in model.parts():
        if part.is_select():
            for dialect in dialects:
                try:
                    check_select(part.relation, dialect)
                except AnalyticsError as refused:
                    raise ModelError(
                        f"model {origin}: {path}.relation: the {dialect} guard refuses it: {refused}"
                    ) from None
    return model


def _explain(error: pydantic.ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem.get("loc", ()) if not str(part).endswith("Churn"))
    kind = problem.get("type", "")
    message = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "missing":
        return f"{where}: is required"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where or 'model'}: {message}"


@cache
def shipped_model(name: str) -> MetricModel:
    """A model shipped with the server (`telecom`, `shop`), checked for every dialect."""
    if name not in SHIPPED:
        raise ModelError(f"model '{name[:40]}' is not shipped; shipped models: {', '.join(SHIPPED)}")
    text = resources.files("warehouse.models").joinpath(f"{name}.yaml").read_bytes()
    return parse_model(text, f"'{name}'")


def load_model(reference: str, base: Path, dialects: Iterable[Dialect] = DIALECTS) -> MetricModel:
    """A source's `model`: a shipped name, or the path of a YAML file relative to `base` (the TOML's folder)."""
    if reference in SHIPPED:
        return shipped_model(reference)
    path = (base / Path(reference).expanduser()).resolve()
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ModelError(
            f"model '{path.name[:60]}': cannot read the file ({error.strerror}); give 'telecom', 'shop' "
            "or the path of a YAML file relative to the sources file"
        ) from None
    return parse_model(text, f"'{path.name[:60]}'", dialects)


def check_select(sql: str, dialect: Dialect) -> None:
    """Raise the dialect guard's one-line refusal unless `sql` is one read-only SELECT.

    The tables it names are taken as allowed here: a source's allow rules (and PostgreSQL's function
    policy, read from the server) are applied when the compiled query runs on the source's engine."""
    tables = _tables(sql, dialect)
    if dialect == "postgres":
        from warehouse.sqlguard import validate_select

        validate_select(sql, policy=_AnyFunction())
    elif dialect == "mysql":
        from warehouse.engines.mysql_guard import validate_mysql_select

        validate_mysql_select(sql, {}, database="model", allowed=frozenset(tables))
    else:
        from warehouse.engines.duckdb_guard import validate_select as validate_duckdb

        validate_duckdb(sql, [], tables)


def _tables(sql: str, dialect: Dialect) -> set[str]:
    import sqlglot
    from sqlglot import exp

    try:
        return {table.name for table in sqlglot.parse_one(sql, read=dialect).find_all(exp.Table)}
    except sqlglot.errors.SqlglotError:
        return set()  # the guard says what is wrong with it


class _AnyFunction(FunctionPolicy):
    """A PostgreSQL function policy for load-time checks: functions are checked at run time, against the
    functions of the source's own server (its engine's policy)."""

    def check(self, names: Sequence[str]) -> None:
        return None
