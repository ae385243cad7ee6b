"""The generated datasets behind the admin tools: load the shop or the telecom tables into a source, empty a
dataset, summarise it; after a change the source's cached pages are dropped and its profiles measured again
(the work is warehouse/shop_store.py's, warehouse/telecom_store.py's and warehouse/db.py's)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from core.errors import AnalyticsError, InvalidInput
from mcp_server.runtime import Runtime
from mcp_server.services import source_pages
from warehouse.generator import GenerationPlan, generate
from warehouse.profiles import Profiler
from warehouse.shop import ShopPlan
from warehouse.shop_store import DATASET, PG_SCHEMA, Progress, load_shop, reset_shop, shop_summary
from warehouse.sources import MAIN, Source
from warehouse.telecom_store import check_writable, load_telecom, reset_telecom, telecom_summary

log = logging.getLogger(__name__)


async def generate_shop(
    runtime: Runtime, source_name: str, plan: ShopPlan, progress: Progress | None = None
) -> dict[str, Any]:
    """Replace the shop of source `source_name` (main: schema `shop` of the built-in database) with the
    data of `plan`: counts per table, rows/s, seed and window."""
    source = runtime.sources.source(source_name)  # NotFound names the sources
    loaded = await load_shop(source, plan, progress=progress)  # InvalidInput without a write_url
    refreshed = await data_changed(runtime, source, DATASET)
    return {
        "dataset": DATASET,
        "source": source.name,
        "tables": loaded.counts,
        "customers": plan.customers,
        **load_answer(loaded.rows, loaded.seconds, plan),
        "profiles_refreshed": refreshed,
    }


async def generate_telecom(
    runtime: Runtime, source_name: str, plan: GenerationPlan, progress: Progress | None = None
) -> dict[str, Any]:
    """Replace the telecom tables of a MySQL/MariaDB or files source (not main: the tool loads main itself)
    with the data of `plan`, the same rows main would hold: counts per table, rows/s, seed and window."""
    source = runtime.sources.source(source_name)  # NotFound names the sources
    check_telecom_source(source)
    check_writable(source)  # no write_url: refused before generating
    started = time.perf_counter()
    data = await asyncio.to_thread(generate, plan)
    counts = await load_telecom(source, data, progress=progress, plan=plan)
    seconds = time.perf_counter() - started
    refreshed = await data_changed(runtime, source, "telecom")
    return {
        "dataset": "telecom",
        "source": source.name,
        "tables": counts,
        "customers": plan.customers,
        **load_answer(sum(counts.values()), seconds, plan),
        "profiles_refreshed": refreshed,
    }


def load_answer(rows: int, seconds: float, plan: GenerationPlan | ShopPlan) -> dict[str, Any]:
    """A load's rows, seconds and rows/s, and the plan's seed and window."""
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds) if seconds else None,
        "seed": plan.seed,
        "start_date": plan.start_date.isoformat(),
        "end_date": plan.end_date.isoformat(),
    }


async def reset(runtime: Runtime, source_name: str, dataset: str = DATASET) -> dict[str, Any]:
    """Empty a dataset's tables in a source (children first): each table's row count before and after."""
    source = runtime.sources.source(source_name)
    if dataset == "telecom":
        check_telecom_source(source)
        counts = await (runtime.db.clear_data() if source.name == MAIN else reset_telecom(source))
    else:
        counts = await reset_shop(source)
    refreshed = await data_changed(runtime, source, dataset)
    return {
        "dataset": dataset,
        "source": source.name,
        "tables": {table: {"before": before, "after": after} for table, (before, after) in counts.items()},
        "profiles_refreshed": refreshed,
    }


async def summary(runtime: Runtime, source_name: str, dataset: str = DATASET) -> dict[str, Any]:
    """Counts per table of the shop (or, on a source other than main, the telecom tables) and the last
    generated window, read through the source's own url when it has no write_url (a summary only reads)."""
    source = runtime.sources.source(source_name)
    if source.kind != "files" and source.write_url is None and source.name != MAIN:
        source = source.model_copy(update={"write_url": source.url})
    if dataset == "telecom":
        check_telecom_source(source)
        return {"source": source.name, **await telecom_summary(source)}
    answer = await shop_summary(source)
    return {"source": source.name, **answer}


def check_telecom_source(source: Source) -> None:
    """The telecom dataset lives in main, a MySQL/MariaDB source or a files source."""
    if source.name != MAIN and source.kind not in ("mysql", "files"):
        raise InvalidInput(
            f"source '{source.name[:40]}' is {source.kind}; the telecom dataset loads into main, "
            "MySQL/MariaDB sources and files sources (dataset='shop' loads into its schema shop)"
        )


async def data_changed(runtime: Runtime, changed: Source, dataset: str) -> list[str]:
    """After a load or reset of `dataset` in `changed`: drop what was derived from the old data and profile
    again every source that reads it (for the shop, the sources reading schema `shop` of the same
    PostgreSQL database too, like the demo `shop` over main's); the sources profiled. A profile that
    fails is logged: the data changed all the same."""
    if changed.name == MAIN:
        await runtime.services.data_replaced()
    names = [changed.name]
    if dataset == DATASET:
        names += [
            source.name
            for source in runtime.sources.registry
            if source.name != changed.name and PG_SCHEMA in source.schemas and _same_database(source, changed)
        ]
    refreshed = []
    for name in names:
        await runtime.services.catalog_cache.forget(source_pages(name))
        if not runtime.sources.has_engine(name) or runtime.profiler is None:
            continue
        try:
            await refresh_profiles(runtime, name)
        except AnalyticsError as error:
            log.warning("profiling source '%s' after a load failed: %s", name, error.message)
            continue
        refreshed.append(name)
    return refreshed


async def refresh_profiles(runtime: Runtime, name: str) -> tuple[str, list[dict[str, Any]]]:
    """Profile source `name` now and drop its cached pages: (its source name, the stored profiles)."""
    profiler = runtime.profiler or Profiler(runtime.db, runtime.sources)
    name, tables = await profiler.refresh(name)
    await runtime.services.catalog_cache.forget(source_pages(name))
    if runtime.notices is not None:  # the other instances drop their cached pages of it too
        await runtime.notices.profiles_refreshed(name)
    return name, tables


def check_dataset(dataset: str, source_name: str) -> None:
    """For callers that load telecom into the built-in database only (the console's read API)."""
    if dataset == "telecom" and source_name not in (MAIN, "database"):
        raise InvalidInput(
            f"the telecom dataset lives in the built-in database only, not in source '{source_name[:40]}'; "
            "use source='main', or dataset='shop'"
        )


def _same_database(one: Source, other: Source) -> bool:
    """Whether two PostgreSQL sources reach the same database (whatever account each logs in as)."""
    if one.kind != "postgresql" or other.kind != "postgresql":
        return False
    return _where(one) == _where(other)


def _where(source: Source) -> tuple[Any, ...]:
    url = (source.write_url or source.url).get_secret_value()
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    return (parts.hostname or options.get("host"), parts.port or 5432, parts.path.lstrip("/"))
