"""The console's pages at /console: server-rendered (Jinja2) with HTMX for the live parts, for admins
signed in with a cookie; every action is a POST carrying the session's CSRF token."""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from console import records
from console.api import audit, refusal
from console.signin import (
    COOKIE,
    CSRF_FIELD,
    SIGNIN_COOKIE,
    SIGNIN_SECONDS,
    ConsoleSession,
    Cookies,
    clear_cookie,
    same_token,
    set_cookie,
)
from core.errors import AnalyticsError, Forbidden, NotFound
from mcp_server import datasets, logs
from mcp_server.auth import Identity
from mcp_server.runtime import Runtime
from warehouse.sources import MAIN

log = logging.getLogger(__name__)

PREFIX = "/console"
# No inline script or style anywhere: htmx is served from here and configured by a <meta> tag.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
STATIC = {"htmx.min.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
PAGE_ROWS = 50  # rows of a console table page (the API allows up to records.MAX_LIMIT)
PROFILE_TABLES = 5  # tables per page of a source's profile
SHOWN_QUERY_CHARS = 240  # a query's text in a table cell (keeps each page well under 100 KB)
SHOWN_KEYS = 12  # key names of one session

Page = Callable[[Request, ConsoleSession, FormData | None], Awaitable[Response]]


def _shortened(value: Any, most: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= most else text[: most - 1] + "…"


def _link(path: str, query: Mapping[str, Any]) -> str:
    kept = {name: value for name, value in query.items() if value not in (None, "")}
    return f"{path}?{urllib.parse.urlencode(kept)}" if kept else path


class Console:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cookies = Cookies.for_runtime(runtime)
        self.rate = records.CallRate()
        # The admin keys (user, key id) a key-made sign-in must still match: API_KEYS, or the local key.
        self.admins = {(e.user_id, e.key_id) for e in runtime.settings.api_keys if e.role == "admin"}
        local = runtime.local_identity
        if local is not None and local.is_admin:
            self.admins.add((local.user_id, local.key_id))
        records.numbers(runtime, self.rate)  # the first sample: calls per minute count from here
        self.templates = Environment(
            loader=PackageLoader("console", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["short"] = _shortened
        self.templates.globals["link"] = _link

    # -- rendering ---------------------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(prefix=PREFIX, request=request, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def refused(self, request: Request, status: int, detail: str, session: ConsoleSession | None) -> Response:
        return self.render(request, "error.html", status, session=session, code=status, detail=detail)

    def page(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page for a signed-in admin: GET without a session goes to sign-in; a POST needs the CSRF token."""

        @functools.wraps(handler)
        async def served(request: Request) -> Response:
            session = self.cookies.session_of(request)
            if (
                session is not None
                and session.via == "key"
                and (session.user_id, session.key_id) not in self.admins
            ):
                session = None  # its key left API_KEYS (or lost role admin) since: signed out
            with logs.request_bound(logs.new_request_id(), session.user_id if session else None):
                form = None
                if request.method == "POST":
                    form = await request.form(max_files=0, max_fields=20)
                    if session is None or not same_token(session.csrf, form.get(CSRF_FIELD)):
                        who = session.identity if session else None
                        await audit(
                            self.runtime, who, "console_action", "csrf_refused", tool=request.url.path[:80]
                        )
                        return self.refused(
                            request, 403, "missing or wrong CSRF token: reload the page and retry", None
                        )
                elif session is None:
                    return RedirectResponse(f"{PREFIX}/signin", status_code=303, headers=SECURITY_HEADERS)
                try:
                    return await handler(request, session, form)
                except AnalyticsError as error:
                    status, _ = refusal(error)
                    return self.refused(request, status, error.message, session)
                except Exception:
                    log.exception("console page failure", extra={"page": request.url.path[:80]})
                    request_id = logs.request_id_var.get()
                    return self.refused(request, 500, f"internal error; request id {request_id}", session)

        return served

    # -- sign-in -----------------------------------------------------------------------------------

    async def signin_form(self, request: Request, status: int = 200, detail: str | None = None) -> Response:
        token, signed = self.cookies.signin_token()
        response = self.render(request, "signin.html", status, session=None, csrf=token, detail=detail)
        set_cookie(response, SIGNIN_COOKIE, signed, SIGNIN_SECONDS, request)
        return response

    async def signin(self, request: Request) -> Response:
        if request.method == "GET":
            if self.cookies.session_of(request) is not None:
                return RedirectResponse(PREFIX, status_code=303, headers=SECURITY_HEADERS)
            return await self.signin_form(request)
        form = await request.form(max_files=0, max_fields=5)
        if not same_token(self.cookies.signin_token_of(request), form.get(CSRF_FIELD)):
            await audit(self.runtime, None, "console_signin", "csrf_refused")
            return self.refused(request, 403, "missing or wrong CSRF token: reload the sign-in page", None)
        key = str(form.get("key") or "").strip()
        identity, via = await self.identify(key)
        if identity is None:
            await audit(self.runtime, None, "console_signin", "failure")
            return await self.signin_form(request, 401, "that key (or token) is not valid")
        if identity.role != "admin":
            await audit(self.runtime, identity, "console_signin", "forbidden")
            return await self.signin_form(
                request, 403, f"the console is for admins; this key has role {identity.role}"
            )
        value, _ = self.cookies.issue(identity, via)
        await audit(self.runtime, identity, "console_signin", "success")
        response = RedirectResponse(PREFIX, status_code=303, headers=SECURITY_HEADERS)
        set_cookie(response, COOKIE, value, self.cookies.lifetime, request)
        clear_cookie(response, SIGNIN_COOKIE, request)
        return response

    async def identify(self, key: str) -> tuple[Identity | None, str]:
        """Who the pasted key (or OAuth token) is, and which it was."""
        if not key or len(key) > 16_384:
            return None, "key"
        identity = self.runtime.keys.resolve(key)
        if identity is None and self.runtime.oauth is not None:
            return await self.runtime.oauth.identify(key), "oauth"
        return identity, "key"

    async def signout(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        await audit(self.runtime, session.identity, "console_signout", "success")
        response = RedirectResponse(f"{PREFIX}/signin", status_code=303, headers=SECURITY_HEADERS)
        clear_cookie(response, COOKIE, request)
        return response

    # -- pages -------------------------------------------------------------------------------------

    async def overview(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        status, health = await records.health(self.runtime)
        return self.render(
            request,
            "overview.html",
            session=session,
            health=health,
            sources=await records.freshness(self.runtime),
            numbers=records.numbers(self.runtime, self.rate),
        )

    async def numbers(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        return self.render(request, "_numbers.html", numbers=records.numbers(self.runtime, self.rate))

    async def queries(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        filters = records.LogFilter.of(request.query_params, "source")
        page = records.Page.of(PAGE_ROWS, request.query_params.get("offset"))
        log_page = await records.query_log(self.runtime, filters, page)
        # An htmx filter swaps the table only; a history restore (back button) wants the whole page.
        fragment = request.headers.get("hx-request") and not request.headers.get("hx-history-restore-request")
        template = "_queries.html" if fragment else "queries.html"
        return self.render(
            request,
            template,
            session=session,
            filters=filters,
            query=filters.query("source"),
            log=log_page,
            ranked=await records.ranked_queries(self.runtime, filters),
            sources=self.runtime.sources.registry.names,
            shown=SHOWN_QUERY_CHARS,
        )

    async def audit_trail(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        filters = records.LogFilter.of(request.query_params, "event")
        page = records.Page.of(PAGE_ROWS, request.query_params.get("offset"))
        return self.render(
            request,
            "audit.html",
            session=session,
            filters=filters,
            query=filters.query("event"),
            log=await records.audit_log(self.runtime, filters, page),
        )

    async def sources(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        return self.render(
            request,
            "sources.html",
            session=session,
            sources=await records.sources(self.runtime),
            states=await records.freshness(self.runtime),
            refreshed=request.query_params.get("refreshed"),
        )

    async def source(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        name = self.runtime.sources.source(request.path_params["name"]).name
        tables = await records.source_profiles(self.runtime, name)
        page = records.Page.of(PROFILE_TABLES, request.query_params.get("offset"))
        shown = tables[page.offset : page.offset + page.limit + 1]
        return self.render(
            request,
            "source.html",
            session=session,
            name=name,
            source=self.runtime.sources.source(name),
            tables=shown[: page.limit],
            total=len(tables),
            page=page.shaped(shown),
            refreshable=name != MAIN and self.runtime.sources.has_engine(name),
        )

    async def refresh(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        name = self.runtime.sources.source(request.path_params["name"]).name
        if name == MAIN or not self.runtime.sources.has_engine(name):
            raise NotFound(f"source '{name}' is not profiled (the built-in database shows its catalog)")
        await datasets.refresh_profiles(self.runtime, name)
        await audit(self.runtime, session.identity, "console_refresh_source", "ok", tool=name)
        target = f"{PREFIX}/sources/{urllib.parse.quote(name)}?refreshed=1"
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)

    async def sessions(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        page = records.Page.of(PAGE_ROWS, request.query_params.get("offset"))
        return self.render(
            request,
            "sessions.html",
            session=session,
            listed=await records.sessions(self.runtime, session.identity, page),
            done=request.query_params.get("done"),
            shown_keys=SHOWN_KEYS,
        )

    async def end_session(self, request: Request, session: ConsoleSession, form: FormData | None) -> Response:
        action = request.path_params["action"]
        store = self.runtime.services.session_store
        target = request.path_params["session_id"]
        if action == "close":
            await store.close(session.identity, target, archive=True)
        elif action == "delete":
            await store.delete(session.identity, target)
        else:
            raise Forbidden("a session can be closed or deleted here, nothing else")
        await audit(self.runtime, session.identity, f"console_session_{action}", "ok", session_id=target[:36])
        return RedirectResponse(f"{PREFIX}/sessions?done={action}", status_code=303, headers=SECURITY_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response(status_code=404, headers=SECURITY_HEADERS)
        return Response(
            _asset(name),
            media_type=STATIC[name],
            headers={**SECURITY_HEADERS, "cache-control": "public, max-age=3600"},
        )

    def routes(self) -> list[tuple[str, list[str], Callable[[Request], Awaitable[Response]]]]:
        return [
            (f"{PREFIX}/signin", ["GET", "POST"], self.signin),
            (f"{PREFIX}/signout", ["POST"], self.page(self.signout)),
            (PREFIX, ["GET"], self.page(self.overview)),
            (f"{PREFIX}/numbers", ["GET"], self.page(self.numbers)),
            (f"{PREFIX}/queries", ["GET"], self.page(self.queries)),
            (f"{PREFIX}/audit", ["GET"], self.page(self.audit_trail)),
            (f"{PREFIX}/sources", ["GET"], self.page(self.sources)),
            (f"{PREFIX}/sources/{{name}}", ["GET"], self.page(self.source)),
            (f"{PREFIX}/sources/{{name}}/refresh", ["POST"], self.page(self.refresh)),
            (f"{PREFIX}/sessions", ["GET"], self.page(self.sessions)),
            (f"{PREFIX}/sessions/{{session_id}}/{{action}}", ["POST"], self.page(self.end_session)),
            (f"{PREFIX}/static/{{name}}", ["GET"], self.static),
        ]


@functools.cache
def _asset(name: str) -> bytes:
    return (resources.files("console") / "static" / name).read_bytes()
