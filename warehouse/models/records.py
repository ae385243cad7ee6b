"""get_record: one entity of a model's relations (a customer, an order, a product) by its key, with the
rows it joins to (its customer) and, bounded, the rows that join to it (an order's items, payment and
shipment). Each statement is compiled with sqlglot, the key bound, and run through the engine's guard."""

from __future__ import annotations

import re
from typing import Any

from sqlglot import exp

from core.errors import InvalidInput
from warehouse.models.compile import Statement, render
from warehouse.models.metrics import _column, _fetch, _identifier, _parameter, _plain
from warehouse.models.run import ModelEngine
from warehouse.models.spec import DIALECT_OF_KIND, Dialect, MetricModel

MOST_RELATED = 100  # rows per related relation; `truncated` says when there were more
# A key is bound, never spliced; text keys are still held to what keys look like (numbers, UUIDs, codes),
# so MySQL's lenient casts cannot turn '1 OR 1=1' into key 1.
_TEXT_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def entities(model: MetricModel) -> list[str]:
    """The relations a record can be looked up in: those declaring a key."""
    return [name for name, relation in model.relations.items() if relation.key is not None]


def _table(model: MetricModel, relation: str, alias: str) -> exp.Expr:
    schema, _, table = model.relations[relation].table.rpartition(".")
    return exp.Table(
        this=_identifier(table),
        db=_identifier(schema) if schema else None,
        alias=exp.TableAlias(this=_identifier(alias)),
    )


def _rows(model: MetricModel, relation: str, column: str, limit: int) -> exp.Select:
    """Every column of `relation`'s rows whose `column` equals the bound key, in key order."""
    key = model.relations[relation].key
    query = (
        exp.select(exp.Column(this=exp.Star(), table=_identifier("t")))
        .from_(_table(model, relation, "t"))
        .where(exp.EQ(this=_column("t", column), expression=_parameter("key")))
    )
    if key is not None:
        query = query.order_by(_column("t", key))
    return query.limit(limit)


def _parent(model: MetricModel, entity: str, column: str, parent: str) -> exp.Select:
    """The `parent` row the entity's `column` points to."""
    key = model.relations[parent].key
    own = model.relations[entity].key
    assert key is not None and own is not None
    pointed = (
        exp.select(_column("e", column))
        .from_(_table(model, entity, "e"))
        .where(exp.EQ(this=_column("e", own), expression=_parameter("key")))
    )
    return (
        exp.select(exp.Column(this=exp.Star(), table=_identifier("t")))
        .from_(_table(model, parent, "t"))
        .where(exp.In(this=_column("t", key), query=pointed.subquery()))
        .limit(2)
    )


async def get_record(
    engine: ModelEngine, model: MetricModel, entity: str, key: int | str, *, source: str = ""
) -> dict[str, Any]:
    """The entity's row, its parents and (at most MOST_RELATED each) its children, with the SQL run."""
    known = entities(model)
    where = f" in source '{source}'" if source else ""
    if entity not in known:
        raise InvalidInput(
            f"unknown entity {str(entity)[:40]!r}{where}; entities: {', '.join(known) or 'none'}"
        )
    dialect: Dialect | None = DIALECT_OF_KIND.get(engine.kind)
    if dialect is None:
        raise InvalidInput(f"source '{source}' has an engine ({engine.kind}) that models do not compile to")
    relation = model.relations[entity]
    assert relation.key is not None
    if isinstance(key, str) and not _TEXT_KEY.match(key):
        raise InvalidInput("key must be a number or a code of letters, digits and - _ . : (up to 200)")
    if isinstance(key, str) and key.isdigit() and len(key) < 19:
        key = int(key)  # "42" for an integer key: the engines bind it as the number it names
    statements: list[Statement] = []

    async def rows(name: str, query: exp.Select, most: int) -> tuple[list[dict[str, Any]], bool]:
        statement = render(name, query, dialect, {"key": key})
        statements.append(statement)
        found, _ = await _fetch(engine, statement, most + 1)
        return [{column: _plain(value) for column, value in row.items()} for row in found[:most]], len(
            found
        ) > most

    (record, _) = await rows(entity, _rows(model, entity, relation.key, 2), 2)
    if not record:
        raise InvalidInput(f"no {entity} with key {str(key)[:40]!r}{where}")
    answer: dict[str, Any] = {
        "entity": entity,
        "key": key,
        "record": record[0],
        "parents": {},
        "children": {},
    }
    for parent, column in relation.joins.items():
        found, _ = await rows(parent, _parent(model, entity, column, parent), 1)
        answer["parents"][parent] = found[0] if found else None
    for name, other in model.relations.items():
        link = other.joins.get(entity)
        if link is None or name == entity:
            continue
        found, more = await rows(name, _rows(model, name, link, MOST_RELATED + 1), MOST_RELATED)
        answer["children"][name] = {"rows": found, "truncated": more}
    answer["sql"] = [statement.sql for statement in statements]
    answer["model"], answer["model_version"] = model.name, model.version
    return answer
