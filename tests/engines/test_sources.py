"""The source registry: the TOML file, environment references, validation, redaction, globs, file watching."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from core.errors import NotFound
from warehouse.sources import Registry, SourceConfigError, load_sources, watch

MAIN_URL = "postgresql://app:main-secret-pw@127.0.0.1:5432/analytics"
ENV = {"DATABASE_URL": MAIN_URL, "SHOP_PASSWORD": "s3cr@t/pw:#?%", "SHOP_HOST": "127.0.0.1"}
SECRETS = ("main-secret-pw", "s3cr@t", "s3cr%40t", "literal-pw")


def sources_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return path


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in (
        "orders.parquet",
        "Customers 2024.csv",
        "events.jsonl",
        "rates.tsv",
        "notes.txt",
        ".hidden.csv",
    ):
        (folder / name).write_text("a\n1\n")
    return folder


SHOP = """
[sources.shop]
url = "mariadb://reader:${SHOP_PASSWORD}@${SHOP_HOST}:3306/shop"
description = "Web shop orders"
tables = ["*"]
exclude = ["secret_*"]
"""


def test_a_postgresql_source_reads_public_unless_it_names_its_schemas(tmp_path: Path) -> None:
    registry = load_sources(
        sources_file(
            tmp_path,
            """
            [sources.finance]
            url = "postgresql://reader@db:5432/finance"
            schemas = ["public", "reporting"]
            [sources.crm]
            url = "postgres://reader:literal-pw@db/crm?sslmode=require"
            """,
        ),
        ENV,
    )
    finance, crm = registry.get("finance"), registry.get("crm")
    assert (finance.kind, finance.schemas, finance.tables, finance.default_schema) == (
        "postgresql",
        ("public", "reporting"),
        ("*",),
        "public",
    )
    assert (crm.kind, crm.schemas) == ("postgresql", ("public",))
    assert crm.redacted_url == "postgres://reader:***@db/crm?sslmode=require"
    assert crm.connection_parameters()["password"] == "literal-pw"
    assert registry.names == ["main", "finance", "crm"]


def test_mysql_and_mariadb_sources_read_the_database_their_url_names(tmp_path: Path) -> None:
    registry = load_sources(
        sources_file(tmp_path, SHOP + '[sources.legacy]\nurl = "mysql://root@10.0.0.5/legacy_shop"\n'),
        ENV,
    )
    shop, legacy = registry.get("shop"), registry.get("legacy")
    assert (shop.kind, shop.scheme, shop.schemas, shop.description) == (
        "mysql",
        "mariadb",
        ("shop",),
        "Web shop orders",
    )
    assert (legacy.kind, legacy.scheme, legacy.schemas) == ("mysql", "mysql", ("legacy_shop",))
    assert legacy.connection_parameters() == {
        "host": "10.0.0.5",
        "port": None,
        "user": "root",
        "password": None,
        "database": "legacy_shop",
        "options": {},
    }


def test_a_files_source_names_each_table_after_its_files_stem(tmp_path: Path, exports: Path) -> None:
    (exports / "orders.csv").write_text("a\n")  # orders.parquet too: both keep their suffix
    outside = tmp_path / "private.csv"
    outside.write_text("secret\n")
    (exports / "leak.csv").symlink_to(outside)
    registry = load_sources(
        sources_file(
            tmp_path,
            f'[sources.exports]\nurl = "files://{exports}"\n[sources.relative]\nurl = "files://exports"\n'
            'exclude = ["rates"]\n',
        ),
        ENV,
    )
    source = registry.get("exports")
    assert source.kind == "files" and source.directory == exports.resolve()
    assert source.redacted_url == "files://.../exports"  # the server's paths stay on the server
    assert {name: path.name for name, path in source.data_files().items()} == {
        "customers_2024": "Customers 2024.csv",
        "events": "events.jsonl",
        "orders_csv": "orders.csv",
        "orders_parquet": "orders.parquet",
        "rates": "rates.tsv",
    }
    relative = registry.get("relative")
    assert relative.directory == exports.resolve()
    assert "rates" not in relative.data_files() and "events" in relative.data_files()


def test_the_built_in_database_is_main_the_default_and_database_is_its_alias(tmp_path: Path) -> None:
    registry = load_sources(sources_file(tmp_path, SHOP), ENV)
    main = registry.get()
    assert registry.get("database") is main and registry.get("main") is main and "database" in registry
    assert (main.kind, main.schemas, main.tables) == (
        "postgresql",
        ("public",),
        ("customers", "network_events", "revenue"),
    )
    assert (
        main.allows("customers")
        and main.allows("public.revenue")
        and not main.allows("mcp_internal.audit_log")
    )
    without_file = load_sources(None, {}, main_url=MAIN_URL)
    assert (
        without_file.names == ["main"]
        and without_file.get().redacted_url == "postgresql://app:***@127.0.0.1:5432/analytics"
    )
    with pytest.raises(NotFound, match="source 'shp' not found; sources: main, shop"):
        registry.get("shp")


def test_environment_references_work_in_any_string_and_passwords_need_no_encoding(tmp_path: Path) -> None:
    env = {**ENV, "SHOP_DESCRIPTION": "Orders from the shop", "HIDDEN": "secret_*", "LITERAL": "x"}
    registry = load_sources(
        sources_file(
            tmp_path,
            """
            [sources.shop]
            url = "mysql://reader:${SHOP_PASSWORD}@${SHOP_HOST}:3307/shop"
            description = "${SHOP_DESCRIPTION} (costs $${LITERAL})"
            exclude = ["${HIDDEN}"]
            """,
        ),
        env,
    )
    shop = registry.get("shop")
    assert shop.description == "Orders from the shop (costs ${LITERAL})"
    assert shop.exclude == ("secret_*",)
    assert shop.connection_parameters() | {"options": None} == {
        "host": "127.0.0.1",
        "port": 3307,
        "user": "reader",
        "password": "s3cr@t/pw:#?%",  # @ / : # ? % in a password from the environment just work
        "database": "shop",
        "options": None,
    }
    assert shop.redacted_url == "mysql://reader:***@127.0.0.1:3307/shop"


def test_a_missing_environment_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError) as caught:
        load_sources(sources_file(tmp_path, SHOP), {"SHOP_HOST": "db"})
    assert str(caught.value) == (
        "ANALYTICS_MCP_SOURCES: [sources.shop] url: environment variable SHOP_PASSWORD is not set; "
        "set it or write the value"
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('[sources.shop]\nurl = "mongodb://db/shop"', "[sources.shop] url: unknown scheme 'mongodb'"),
        ('[sources.shop]\nurl = "127.0.0.1:3306/shop"', "[sources.shop] url: unknown scheme"),
        (
            '[sources.shop]\nurl = "mysql://u:${NOPE}@db/shop"',
            "[sources.shop] url: environment variable NOPE is not set",
        ),
        (
            '[sources.shop]\nurl = "mysql://u:${bad-name}@db/shop"',
            "[sources.shop] url: malformed environment reference",
        ),
        (
            '[sources.shop]\nurl = "mysql://db/shop"\ntables = ["a.b.c"]',
            "[sources.shop] tables: bad glob 'a.b.c'",
        ),
        (
            '[sources.shop]\nurl = "mysql://db/shop"\nexclude = ["ord[ers"]',
            "[sources.shop] exclude: bad glob 'ord[ers'",
        ),
        (
            '[sources.shop]\nurl = "mysql://db/shop"\ntables = ["drop table;"]',
            "[sources.shop] tables: bad glob",
        ),
        ('[sources.shop]\nurl = "mysql://db/shop"\ntables = []', "[sources.shop] tables is empty"),
        (
            '[sources.shop]\nurl = "mysql://db/shop"\n[sources.shop]\nurl = "mysql://db/x"',
            "[sources.shop] is declared twice",
        ),
        ('[sources.Shop]\nurl = "mysql://db/shop"', "[sources.Shop] name must be a lower-case letter"),
        ('[sources.a-b]\nurl = "mysql://db/shop"', "[sources.a-b] name must be"),
        (f'[sources.{"x" * 33}]\nurl = "mysql://db/shop"', f"[sources.{'x' * 33}] name must be"),
        (
            '[sources.files]\nurl = "files:///no/such/folder"',
            "[sources.files] url: the folder does not exist",
        ),
        (
            '[sources.main]\nurl = "postgresql://db/x"',
            "[sources.main] 'main' is reserved for the built-in database",
        ),
        ('[sources.database]\nurl = "postgresql://db/x"', "[sources.database] 'database' is reserved"),
        (
            '[sources.shop]\nurl = "mysql://db/shop"\ntabels = ["*"]',
            "[sources.shop] unknown setting 'tabels'",
        ),
        ('[sources.shop]\ndescription = "no url"', "[sources.shop] needs a url"),
        ("[sources.shop]\nurl = 3306", "[sources.shop] url must be a string"),
        (
            '[sources.shop]\nurl = "mysql://db/shop"\ntables = "*"',
            "[sources.shop] tables must be a list of strings",
        ),
        ('[sources.shop]\nurl = "mysql://u:literal-pw@db:port/shop"', "[sources.shop] url: malformed url"),
        ('[sources.shop]\nurl = "mysql://u:literal-pw@db"', "[sources.shop] url: names no database"),
        ('[sources.shop]\nurl = "mysql://u:literal-pw@/shop"', "[sources.shop] url: names no host"),
        (
            '[sources.shop]\nurl = "mysql://db/shop"\nschemas = ["x"]',
            "[sources.shop] schemas is for postgresql sources",
        ),
        (
            '[sources.shop]\nurl = "mysql://db/mysql"',
            "[sources.shop] url: the database 'mysql' is a system database",
        ),
        (
            '[sources.fin]\nurl = "postgresql://db/f"\nschemas = ["pg_catalog"]',
            "[sources.fin] schemas: 'pg_catalog' is a system",
        ),
        (
            '[sources.fin]\nurl = "postgresql://db/f"\nschemas = ["rep*"]',
            "[sources.fin] schemas: 'rep*' is not a schema name",
        ),
        (
            '[sources.fin]\nurl = "postgresql://db/f"\nwrite_url = "mysql://db/f"',
            "[sources.fin] write_url must be a postgresql url",
        ),
        (
            '[sources.fin]\nurl = "postgresql://db/f"\nschemas = []',
            "[sources.fin] schemas is empty",
        ),
        ('[sources."a\\nb"]\nurl = "mysql://db/shop"', "[sources.a b] name must be"),
        ("[sources]\nshop = 1", "[sources.shop] must be a table of settings"),
        ("[source.shop]\nurl = 1", "unknown section [source]"),
        ("[sources.shop\nurl = 1", "not valid TOML"),
    ],
)
def test_every_validation_error_is_one_line_naming_the_entry(
    tmp_path: Path, entry: str, problem: str
) -> None:
    with pytest.raises(SourceConfigError) as caught:
        load_sources(sources_file(tmp_path, entry), ENV)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("ANALYTICS_MCP_SOURCES: ")
    assert problem in message
    assert "literal-pw" not in message and str(tmp_path) not in message


def test_an_unreadable_sources_file_stops_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        SourceConfigError, match=r"^ANALYTICS_MCP_SOURCES: cannot read the sources file \(No such"
    ):
        load_sources(tmp_path / "missing.toml", ENV)


async def test_secrets_never_show_in_repr_str_json_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = sources_file(
        tmp_path,
        SHOP + '[sources.crm]\nurl = "postgresql://u:literal-pw@db/crm?password=literal-pw"\n'
        'write_url = "postgresql://w:literal-pw@db/crm"\n',
    )
    registry = load_sources(path, ENV)
    shown = [repr(registry), str(registry)]
    for source in registry:
        shown += [
            repr(source),
            str(source),
            source.model_dump_json(),
            source.redacted_url,
            str(source.model_dump()),
        ]
    assert registry.get("crm").redacted_url == "postgresql://u:***@db/crm?password=***"
    assert "main-secret-pw" in registry.get().url.get_secret_value()  # the driver still gets it

    task = asyncio.create_task(watch(path, lambda registry: None, env=ENV, current=registry, interval=0.1))
    try:
        path.write_text(SHOP.replace("shop]", "shop2]") + 'tables = ["x"\n')  # bad: logged
        await asyncio.sleep(0.5)
        path.write_text(SHOP.replace("shop]", "shop2]"))  # good: logged as reloaded
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
    logged = [record.getMessage() for record in caplog.records]
    assert any("not reloaded" in line for line in logged) and any(
        "sources reloaded" in line for line in logged
    )
    for text in shown + logged:
        for secret in SECRETS:
            assert secret not in text, text


@pytest.mark.parametrize(
    ("settings", "allowed", "refused"),
    [
        (
            'url = "postgresql://db/f"\nschemas = ["public", "reporting"]\nexclude = ["*.salary*", "reporting.raw_*"]',
            ["orders", "public.orders", "reporting.orders", "REPORTING.Orders", "reporting.rawdata"],
            [
                "public.salary",
                "reporting.Salary_2024",
                "reporting.raw_x",
                "RAW_x.x",
                "audit.orders",
                "pg_catalog.pg_authid",
                "information_schema.tables",
                "mcp_internal.audit_log",
                "",
                "public.",
            ],
        ),
        (
            'url = "postgresql://db/f"\nschemas = ["public", "sales"]\ntables = ["public.orders", "sales.*", "dim_?"]',
            ["orders", "public.orders", "sales.anything", "public.dim_a", "sales.dim_b"],
            ["public.customers", "dim_ab", "other.orders", "customers"],
        ),
        (
            'url = "mysql://db/shop"\ntables = ["order*", "shop.customers"]\nexclude = ["orders_[0-9]*"]',
            ["orders", "shop.orders", "order_items", "customers", "shop.CUSTOMERS"],
            [
                "orders_2023",
                "mysql.user",
                "performance_schema.threads",
                "information_schema.tables",
                "sys.version",
                "other_db.orders",
                "payments",
            ],
        ),
        (
            'url = "files://."\nexclude = ["tmp_*"]',
            ["orders", "main.orders"],
            ["tmp_x", "other.orders", "information_schema.tables"],
        ),
    ],
)
def test_globs_allow_tables_and_schema_tables_and_exclude_wins(
    tmp_path: Path, settings: str, allowed: list[str], refused: list[str]
) -> None:
    source = load_sources(sources_file(tmp_path, f"[sources.s]\n{settings}\n"), {}).get("s")
    assert [relation for relation in allowed if not source.allows(relation)] == []
    assert [relation for relation in refused if source.allows(relation)] == []


async def test_an_edited_sources_file_is_picked_up_within_3_s(tmp_path: Path) -> None:
    path = sources_file(tmp_path, SHOP)
    registry = load_sources(path, ENV)
    changes: asyncio.Queue[Registry] = asyncio.Queue()
    task = asyncio.create_task(watch(path, changes.put_nowait, env=ENV, current=registry))  # default interval
    try:
        held = registry.get("shop")  # work in flight keeps the definition it started with
        await asyncio.sleep(0.1)
        path.write_text(
            SHOP.replace('"Web shop orders"', '"Shop orders, edited"')
            + '[sources.crm]\nurl = "postgresql://db/crm"\n'
        )
        started = time.monotonic()
        reloaded = await asyncio.wait_for(changes.get(), timeout=3)
        assert time.monotonic() - started < 3
    finally:
        task.cancel()
    assert reloaded.names == ["main", "shop", "crm"]
    assert reloaded.get("shop").description == "Shop orders, edited"
    assert held.description == "Web shop orders" and registry.get("shop") is held


async def test_a_broken_edit_keeps_the_old_registry_and_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sources_file(tmp_path, SHOP)
    registry = load_sources(path, ENV)
    changes: list[Registry] = []
    caplog.set_level(logging.INFO, logger="warehouse.sources")
    task = asyncio.create_task(watch(path, changes.append, env=ENV, current=registry, interval=0.1))
    try:
        path.write_text(SHOP + '[sources.broken]\nurl = "mongodb://db/x"\n')
        await asyncio.sleep(0.6)  # several polls of the same bad file: still one line
        path.unlink()
        await asyncio.sleep(0.3)
        path.write_text(SHOP + "# only a comment changed\n")  # same sources: nothing to apply
        await asyncio.sleep(0.3)
        path.write_text(SHOP + '[sources.fixed]\nurl = "postgresql://db/x"\n')
        for _ in range(30):
            if changes:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings[0] == (
        "sources file not reloaded, keeping the current sources: ANALYTICS_MCP_SOURCES: [sources.broken] "
        "url: unknown scheme 'mongodb'; use postgresql://, mysql://, mariadb:// or files:///folder"
    )
    assert len(warnings) == 2 and warnings[1].startswith("sources file unreadable")
    assert [registry.names for registry in changes] == [["main", "shop", "fixed"]]


async def test_two_watchers_like_two_instances_both_see_the_change(tmp_path: Path) -> None:
    path = sources_file(tmp_path, SHOP)
    seen: dict[str, asyncio.Future[Registry]] = {}
    tasks = []
    for instance in ("one", "two"):
        seen[instance] = asyncio.get_running_loop().create_future()
        registry = load_sources(path, ENV)

        def record(registry: Registry, future: asyncio.Future[Registry] = seen[instance]) -> None:
            if not future.done():
                future.set_result(registry)

        tasks.append(asyncio.create_task(watch(path, record, env=ENV, current=registry, interval=0.2)))
    try:
        # An editor that writes a new file and renames it over the old one (a new inode).
        replacement = tmp_path / "sources.toml.new"
        replacement.write_text(SHOP + '[sources.added]\nurl = "mysql://db/added"\n')
        os.replace(replacement, path)
        one, two = await asyncio.wait_for(asyncio.gather(seen["one"], seen["two"]), timeout=3)
    finally:
        for task in tasks:
            task.cancel()
    assert one == two and "added" in one.names and one.get("added").schemas == ("added",)


def test_the_example_sources_file_loads(tmp_path: Path, exports: Path) -> None:
    example = Path(__file__).parents[2] / "deploy" / "sources.example.toml"
    path = sources_file(tmp_path, example.read_text().replace("/srv/exports", str(exports)))
    registry = load_sources(path, {**ENV, "FINANCE_PASSWORD": "pw"})
    assert registry.names == ["main", "shop", "finance", "exports"]
    finance = registry.get("finance")
    assert finance.allows("reporting.monthly_revenue") and not finance.allows("reporting.daily")
    assert not finance.allows("public.salary_bands") and registry.get("shop").allows("orders")
