"""The console over plain HTTP: sign-in for admins only, the cookie's flags, CSRF refusals, the security
headers, and every page small and free of keys and DSNs."""

from __future__ import annotations

import re

import pytest

from tests.console.conftest import plain_sql

pytestmark = pytest.mark.http

PAGES = [
    "/console",
    "/console/queries",
    "/console/sources",
    "/console/sources/exports",
    "/console/sources/main",
    "/console/sessions",
    "/console/audit",
]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(http, key: str, headers: dict[str, str] | None = None):
    form = await http.get("/console/signin", headers=headers)
    return await http.post(
        "/console/signin", data={"key": key, "csrf_token": csrf_of(form.text)}, headers=headers
    )


def set_cookie_header(response, name: str) -> str:
    found = [value for value in response.headers.get_list("set-cookie") if value.startswith(name + "=")]
    assert found, f"no {name} cookie set"
    return found[0]


async def test_an_admin_key_signs_in_with_a_strict_httponly_cookie_with_an_expiry(http, api_keys):
    response = await sign_in(http, api_keys["admin"])
    assert response.status_code == 303 and response.headers["location"] == "/console"
    cookie = set_cookie_header(response, "amcp_console").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "max-age=28800" in cookie
    assert "secure" not in cookie  # plain http on loopback: a Secure cookie would never come back
    assert api_keys["admin"] not in cookie
    overview = await http.get("/console")
    assert overview.status_code == 200 and "Overview" in overview.text


async def test_the_cookie_is_secure_when_the_console_is_reached_over_https(http, api_keys):
    # uvicorn trusts X-Forwarded-Proto from loopback, as from a TLS-terminating proxy in front. The
    # client sees plain http and would not send back a Secure cookie: it is sent by hand.
    https = {"X-Forwarded-Proto": "https"}
    form = await http.get("/console/signin", headers=https)
    signin_cookie = set_cookie_header(form, "amcp_console_signin")
    assert "secure" in signin_cookie.lower()
    http.cookies.clear()
    response = await http.post(
        "/console/signin",
        data={"key": api_keys["admin"], "csrf_token": csrf_of(form.text)},
        headers={**https, "Cookie": signin_cookie.split(";")[0]},
    )
    assert response.status_code == 303
    assert "secure" in set_cookie_header(response, "amcp_console").lower()


@pytest.mark.parametrize("user", ["viewer", "analyst"])
async def test_viewer_and_analyst_keys_are_refused_with_403(http, api_keys, user):
    response = await sign_in(http, api_keys[user])
    assert response.status_code == 403
    assert f"this key has role {user}" in response.text
    assert not any(v.startswith("amcp_console=") for v in response.headers.get_list("set-cookie"))
    assert (await http.get("/console")).status_code == 303  # still signed out


async def test_a_wrong_key_is_401_and_no_cookie_means_the_sign_in_page(http):
    assert (await sign_in(http, "amcp_not-a-key")).status_code == 401
    response = await http.get("/console/queries")
    assert response.status_code == 303 and response.headers["location"] == "/console/signin"


async def test_a_tampered_cookie_is_not_a_session(http, api_keys):
    await sign_in(http, api_keys["admin"])
    value = http.cookies.get("amcp_console")
    http.cookies.clear()
    http.cookies.set(
        "amcp_console", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"), path="/console"
    )
    assert (await http.get("/console")).status_code == 303


async def test_sign_in_without_its_csrf_token_is_403(http, api_keys):
    await http.get("/console/signin")
    response = await http.post("/console/signin", data={"key": api_keys["admin"]})
    assert response.status_code == 403 and "CSRF" in response.text


@pytest.mark.parametrize("token", [None, "", "forged-token"])
async def test_an_action_without_the_right_csrf_token_is_403_and_changes_nothing(
    http, api_keys, console_runtime, token
):
    admin = next(e for e in console_runtime.settings.api_keys if e.user_id == "admin")
    from mcp_server.auth import Identity

    created = await console_runtime.services.session_store.create(
        Identity("admin", "admin", admin.key_id), "database", "read", 600
    )
    session_id = created["session_id"]
    await sign_in(http, api_keys["admin"])
    data = {} if token is None else {"csrf_token": token}
    response = await http.post(f"/console/sessions/{session_id}/delete", data=data)
    assert response.status_code == 403 and "CSRF" in response.text
    assert (
        await console_runtime.redis.exists(console_runtime.services.session_store.hash_key(session_id)) == 1
    )
    page = await http.get("/console/sessions")
    deleted = await http.post(
        f"/console/sessions/{session_id}/delete", data={"csrf_token": csrf_of(page.text)}
    )
    assert deleted.status_code == 303
    assert (
        await console_runtime.redis.exists(console_runtime.services.session_store.hash_key(session_id)) == 0
    )


async def test_every_page_has_a_strict_csp_is_small_and_shows_no_secret(http, api_keys, console_runtime):
    await sign_in(http, api_keys["admin"])
    secrets = [*api_keys.values(), str(console_runtime.sources.registry.get("exports").directory)]
    secrets += [key for key in console_runtime.encryption_keys]
    for path in PAGES:
        response = await http.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert len(response.content) < 100_000, (path, len(response.content))
        assert "<script>" not in response.text and " on" + "click=" not in response.text  # no inline script
        for secret in secrets:
            assert secret not in response.text, path


async def test_a_page_of_the_query_log_is_capped_and_paginated(http, api_keys, console_runtime):
    await plain_sql(
        console_runtime,
        "INSERT INTO mcp_internal.query_log (user_id, query_hash, duration_ms, row_count, outcome, query_text) "
        "SELECT 'bulk', md5(i::text), i, 1, 'ok', 'select ' || repeat('x, ', 2000) FROM generate_series(1, 120) i",
    )
    await sign_in(http, api_keys["admin"])
    first = await http.get("/console/queries", params={"user": "bulk"})
    assert first.text.count('class="entry"') == 50 and len(first.content) < 100_000
    assert 'rel="next"' in first.text
    third = await http.get("/console/queries", params={"user": "bulk", "offset": 100})
    assert third.text.count('class="entry"') == 20 and 'rel="next"' not in third.text
    api = await http.get(
        "/api/v1/query-log", params={"user": "bulk", "limit": 500}, headers={"X-API-Key": api_keys["admin"]}
    )
    assert len(api.json()["entries"]) == 120
    await plain_sql(console_runtime, "DELETE FROM mcp_internal.query_log WHERE user_id = 'bulk'")


async def test_static_assets_are_served_from_the_server(http):
    htmx = await http.get("/console/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.content.startswith(b"var htmx=")
    assert (await http.get("/console/static/../pages.py")).status_code == 404


async def test_a_sign_in_whose_key_left_api_keys_is_signed_out(http, api_keys, console_runtime):
    from console.signin import Cookies
    from mcp_server.auth import Identity

    cookies = Cookies.for_runtime(console_runtime)
    admin = next(e for e in console_runtime.settings.api_keys if e.user_id == "admin")
    kept, _ = cookies.issue(Identity("admin", "admin", admin.key_id), "key")
    gone, _ = cookies.issue(Identity("former-admin", "admin", "0123456789ab"), "key")
    http.cookies.set("amcp_console", kept, path="/console")
    assert (await http.get("/console")).status_code == 200
    http.cookies.set("amcp_console", gone, path="/console")
    assert (await http.get("/console")).status_code == 303
