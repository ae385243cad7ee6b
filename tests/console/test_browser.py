"""The console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium) headless.

Sign in, run a query through MCP (a FastMCP client over streamable HTTP to the same app), see it in the
query log with its duration, filter it, open a source's profile and refresh it, close a session; a viewer
key is refused and an action without the CSRF token too. Every page is screenshotted (laptop and 390 px
phone width) into tests/artifacts/console/, and checked for sideways scrolling and CSP violations."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from tests.console.conftest import plain_sql
from tests.support import call

pytestmark = [pytest.mark.http, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

if not CHROMIUM.exists():  # `make install` installs it; without it the browser tests cannot run
    if os.environ.get("CI"):  # in CI they must run, not skip
        raise RuntimeError(
            "no /usr/bin/chromium in CI: the install step (make install) should have installed it"
        )
    pytest.skip(
        "no /usr/bin/chromium: run `make install` (installs Debian's chromium)", allow_module_level=True
    )


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser, base_url):
    context = await browser.new_context(base_url=base_url, viewport=LAPTOP)
    opened = await context.new_page()
    opened.violations = []
    opened.on(
        "console",
        lambda message: (
            opened.violations.append(message.text)
            if "Content Security Policy" in message.text or message.type == "error"
            else None
        ),
    )
    yield opened
    await context.close()


async def sign_in(page, key: str) -> None:
    await page.goto("/console/signin")
    await page.fill("#key", key)
    await page.click("button[type=submit]")


async def shoot(page, name: str) -> None:
    """Screenshots at laptop and phone width; at 390 px nothing may scroll sideways."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=ARTIFACTS / f"{name}-390px.png", full_page=True)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at 390 px"
    await page.set_viewport_size(LAPTOP)


async def test_a_viewer_key_is_refused(page, api_keys):
    await sign_in(page, api_keys["viewer"])
    assert "the console is for admins; this key has role viewer" in await page.inner_text("main")
    await shoot(page, "signin-refused")
    await page.goto("/console")
    assert page.url.endswith("/console/signin")


async def test_an_admin_follows_a_query_from_mcp_to_the_log_a_source_and_a_session(
    page, base_url, api_keys, console_runtime
):
    # An analyst works through MCP over HTTP: one query, one session with a saved value.
    transport = StreamableHttpTransport(f"{base_url}/mcp", headers={"X-API-Key": api_keys["analyst"]})
    async with Client(transport) as client:
        await call(
            client,
            "query_database",
            query="SELECT location, count(*) AS n FROM customers WHERE age >= %(min_age)s GROUP BY location",
            parameters={"min_age": 40},
        )
        created = await call(client, "session_create", data_source="database", ttl_seconds=900)
        session_id = created["session_id"]
        await call(
            client, "session_update", session_id=session_id, key="notes", value={"secret": "s3cr3t-value"}
        )
    await console_runtime.services.query_log.flush()
    await console_runtime.services.auditor.flush()

    await sign_in(page, api_keys["admin"])
    assert page.url.endswith("/console")
    assert "Health: ok" in await page.inner_text("main")
    assert int(await page.inner_text("#calls-total")) >= 3
    await shoot(page, "overview")

    # The query log: the query, literals hidden, with the duration PostgreSQL holds for it.
    await page.click("nav >> text=Query log")
    (logged,) = await plain_sql(
        console_runtime,
        "SELECT duration_ms FROM mcp_internal.query_log WHERE user_id = 'analyst' AND query_text LIKE '%location%'",
    )
    row = page.locator("tr.entry", has_text="group by location")
    await row.first.wait_for()
    assert await row.locator("td.duration").inner_text() == f"{logged['duration_ms']:.1f}"
    assert "%(min_age)s" in await row.inner_text() and "40" not in await row.locator("code").inner_text()
    await shoot(page, "query-log")

    # Filtered (htmx swaps the table and the URL follows): only the analyst's ok queries remain.
    await page.fill("input[name=user]", "analyst")
    await page.select_option("select[name=outcome]", "ok")
    await page.click(".filters button[type=submit]")
    await page.wait_for_url(re.compile(r"user=analyst"))
    users = await page.locator("tr.entry td:nth-child(2)").all_inner_texts()
    assert users and set(users) == {"analyst"}
    await page.fill("input[name=user]", "nobody-here")
    await page.click(".filters button[type=submit]")
    await page.wait_for_url(re.compile(r"user=nobody-here"))
    assert "No queries match." in await page.inner_text("#log")
    await shoot(page, "query-log-filtered")

    # A source's profile, refreshed from the page.
    await page.click("nav >> text=Sources")
    assert "files://.../data" in await page.inner_text("main")
    await shoot(page, "sources")
    await page.click("a:text-is('exports')")
    await page.click("text=Refresh profiles now")
    await page.wait_for_url(re.compile(r"refreshed=1"))
    main = await page.inner_text("main")
    assert "Profiles refreshed." in main and "plans" in main and "6 rows" in main
    await shoot(page, "source-profile")

    # The session: owner and key name shown, never the value; closed (archived) from the page.
    await page.click("nav >> text=Sessions")
    session_row = page.locator(f"tr.session[data-session='{session_id}']")
    text = await session_row.inner_text()
    assert "analyst" in text and "notes" in text and "s3cr3t-value" not in await page.content()
    await shoot(page, "sessions")
    page.once("dialog", lambda dialog: dialog.accept())
    await session_row.locator("button", has_text="Close").click()
    await page.locator("text=Session closed and archived.").wait_for()
    assert await session_row.count() == 0
    assert (
        await console_runtime.redis.exists(console_runtime.services.session_store.hash_key(session_id)) == 0
    )
    (archived,) = await plain_sql(
        console_runtime,
        "SELECT owner_id FROM mcp_internal.session_archive WHERE session_id = $1::uuid",
        session_id,
    )
    assert archived["owner_id"] == "analyst"

    # An action without the CSRF token (same cookie, no form field) is refused.
    refused = await page.request.post("/console/sources/exports/refresh", form={"other": "x"})
    assert refused.status == 403

    await console_runtime.services.auditor.flush()
    await page.click("nav >> text=Audit trail")
    audit = await page.inner_text("main")
    assert "console_session_close" in audit and "csrf_refused" in audit
    await shoot(page, "audit-trail")
    assert page.violations == []
