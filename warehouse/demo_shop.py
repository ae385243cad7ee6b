"""The zero set-up `shop` source: the shop dataset loaded into schema `shop` of the embedded database when
absent, read (like agent queries on `main`) as the server's query role, written through the owner's url."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

from warehouse import sql
from warehouse.db import Database
from warehouse.models.spec import shipped_model
from warehouse.shop import DEFAULT_SEED, shop_plan
from warehouse.shop_store import PG_SCHEMA, ShopLoad, load_shop, shop_summary
from warehouse.sources import Registry, Source, main_source, redact_url

NAME = "shop"
DESCRIPTION = (
    "Demo e-commerce shop (generated): products, customers, orders, order_items, payments, shipments"
)
CUSTOMERS = 2_000  # small: about 40,000 rows, loaded in well under a second
SEED = DEFAULT_SEED


async def seed_demo_shop(db: Database, main_url: str) -> ShopLoad | None:
    """Load the demo shop into schema `shop` unless it holds rows already (a restart loads nothing), and
    let the query role read it; the load, or None when there was nothing to load."""
    main = main_source(main_url)
    loaded = None
    if not (await shop_summary(main))["rows"]:
        loaded = await load_shop(main, shop_plan(CUSTOMERS, SEED))
    # On every start (the tables may come from `analytics-mcp seed --dataset shop`); DATABASE_QUERY_URL's
    # account is the operator's to grant.
    if db.query_url is None and db.query_role is not None:
        async with db.connection() as conn, conn.transaction():
            await conn.execute("SELECT set_config('analytics_mcp.query_role', $1, true)", db.query_role)
            await conn.execute(sql.load("shop_grants"))
    return loaded


async def demo_shop_source(db: Database, main_url: str) -> Source:
    """The `shop` source: reads as the query role (the account agent queries on `main` use), writes (the
    generator, reset_data) through `main_url`; the shipped shop metric model."""
    if db.query_url is not None:
        reader = db.query_url
    else:
        async with db.connection() as conn:
            password = await conn.fetchval(
                "SELECT password FROM mcp_internal.query_login WHERE role_name = $1", db.query_role
            )
        parts = urlsplit(main_url)
        host = parts.netloc.rpartition("@")[2]
        login = f"{quote(str(db.query_role), safe='')}:{quote(str(password), safe='')}"
        reader = urlunsplit(parts._replace(netloc=f"{login}@{host}"))
    return Source(
        name=NAME,
        kind="postgresql",
        url=SecretStr(reader),
        redacted_url=redact_url(reader),
        description=DESCRIPTION,
        schemas=(PG_SCHEMA,),
        model="shop",
        metric_model=shipped_model("shop"),
        write_url=SecretStr(main_url),
    )


def with_demo_shop(registry: Registry, source: Source) -> Registry:
    """`registry` plus the demo `shop` source (a source of that name the operator named wins)."""
    sources = {entry.name: entry for entry in registry}
    sources.setdefault(NAME, source)
    return Registry(sources, registry.digest)
