"""OAuth 2.1 over real HTTP: bearer JWTs minted here from a local key pair, checked against a PEM file
or a JWKS served on loopback; bad tokens get 401 naming the RFC 9728 metadata; API keys still work."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp.server.auth.providers.jwt import RSAKeyPair
from joserfc import jwk
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_server.auth import OAuthVerifier
from mcp_server.config import ConfigError, parse_oauth
from mcp_server.runtime import Runtime
from tests.security.conftest import instance
from tests.support import mcp_session, served, serving

pytestmark = pytest.mark.http

ISSUER = "https://issuer.example.test"
AUDIENCE = "analytics-mcp-test"
METADATA = "/.well-known/oauth-protected-resource/mcp"
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def issuer_keys() -> RSAKeyPair:
    return RSAKeyPair.generate()


@pytest.fixture(scope="module")
def stranger_keys() -> RSAKeyPair:
    """A key pair the server does not trust: its tokens carry a wrong signature."""
    return RSAKeyPair.generate()


def with_oauth(runtime: Runtime, env: dict[str, str]) -> Runtime:
    """The shared runtime as a server configured with these OAUTH_* variables."""
    settings = parse_oauth(env)
    assert settings is not None
    return replace(instance(runtime, oauth=settings), oauth=OAuthVerifier(settings))


def token(keys: RSAKeyPair, **changes: Any) -> str:
    """A token like the issuer's: analyst `oauth-alice`, valid for an hour; `changes` alter it."""
    role = changes.pop("role", "analyst")
    claims = {} if role is None else {"role": role}
    claims.update(changes.pop("claims", {}))
    options: dict[str, Any] = {"subject": "oauth-alice", "issuer": ISSUER, "audience": AUDIENCE}
    options.update(changes)
    return keys.create_token(additional_claims=claims, **options)


@pytest.fixture(scope="module")
async def pem_server(runtime, issuer_keys, tmp_path_factory):
    """The server in PEM mode (OAUTH_PUBLIC_KEY), with the test API keys beside it."""
    pem = tmp_path_factory.mktemp("oauth") / "issuer.pem"
    pem.write_text(issuer_keys.public_key)
    env = {"OAUTH_ISSUER": ISSUER, "OAUTH_PUBLIC_KEY": str(pem), "OAUTH_AUDIENCE": AUDIENCE}
    async with serving(with_oauth(runtime, env)) as url:
        yield url


async def post_initialize(url: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{url}/mcp",
            headers={**headers, **ACCEPT},
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        )


async def test_an_analyst_token_lists_and_calls_analyst_tools(pem_server, issuer_keys):
    bearer = {"Authorization": f"Bearer {token(issuer_keys)}"}
    async with mcp_session(pem_server, bearer) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"summary_snapshot", "query_database", "session_read"} <= tools
        assert "generate_data" not in tools  # admin only
        result = await session.call_tool("summary_snapshot", {})
        assert not result.is_error, result.content
        assert result.structured_content["tables"]["customers"]["rows"] > 0
        created = await session.call_tool("session_create", {"data_source": "database"})
        assert not created.is_error, created.content
        session_id = created.structured_content["session_id"]
        listed = {str(r.uri): r.description for r in (await session.list_resources()).resources}
        assert "owner oauth-alice" in listed[f"session://{session_id}"]  # the user is the token's sub


async def test_a_viewer_token_is_refused_analyst_tools(pem_server, issuer_keys):
    bearer = {"Authorization": f"Bearer {token(issuer_keys, role='viewer', subject='oauth-victor')}"}
    async with mcp_session(pem_server, bearer) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert "session_read" in tools
        assert "summary_snapshot" not in tools
        result = await session.call_tool("summary_snapshot", {})
    assert result.is_error
    assert "viewer" in result.content[0].text


async def test_an_admin_token_sees_admin_tools(pem_server, issuer_keys):
    bearer = {"Authorization": f"Bearer {token(issuer_keys, role='admin', subject='oauth-ada')}"}
    async with mcp_session(pem_server, bearer) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
    assert "generate_data" in tools


REFUSED = {
    "expired": lambda keys, stranger: token(keys, expires_in_seconds=-60),
    "wrong audience": lambda keys, stranger: token(keys, audience="some-other-api"),
    "wrong issuer": lambda keys, stranger: token(keys, issuer="https://evil.example.test"),
    "wrong signature": lambda keys, stranger: token(stranger),
    "unknown role": lambda keys, stranger: token(keys, role="superuser"),
    "role not a string": lambda keys, stranger: token(keys, role=["admin"]),
    "no role": lambda keys, stranger: token(keys, role=None),
    "sub not a user id": lambda keys, stranger: token(keys, subject="alice; drop table"),
    "no expiry": lambda keys, stranger: token(keys, claims={"exp": None}),
    "tampered claims": lambda keys, stranger: _tampered(token(keys, role="viewer")),
}


def _tampered(jwt: str) -> str:
    """The viewer token with its payload swapped for an admin one (the signature no longer matches)."""
    import base64
    import json

    header, payload, signature = jwt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_bad_token_gets_401_naming_the_metadata(pem_server, issuer_keys, stranger_keys, case):
    bad = REFUSED[case](issuer_keys, stranger_keys)
    response = await post_initialize(pem_server, {"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401, case
    assert response.json()["error"] == "unauthorized"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{pem_server}{METADATA}"' in challenge
    assert 'realm="analytics-mcp"' in challenge


async def test_no_credentials_get_401_naming_the_metadata(pem_server):
    response = await post_initialize(pem_server, {})
    assert response.status_code == 401
    assert f'resource_metadata="{pem_server}{METADATA}"' in response.headers["www-authenticate"]


async def test_protected_resource_metadata_is_served_without_credentials(pem_server):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{pem_server}{METADATA}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "resource": f"{pem_server}/mcp",
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "resource_name": "analytics-mcp",
        "scopes_supported": [],  # FastMCP's: roles come in a claim, not as scopes
    }


async def test_metadata_names_the_public_base_url_behind_a_proxy(runtime, issuer_keys, tmp_path):
    pem = tmp_path / "issuer.pem"
    pem.write_text(issuer_keys.public_key)
    env = {"OAUTH_ISSUER": ISSUER, "OAUTH_PUBLIC_KEY": str(pem), "OAUTH_AUDIENCE": AUDIENCE}
    proxied = with_oauth(runtime, env)
    proxied = replace(
        proxied, settings=proxied.settings.with_changes(public_base_url="https://analytics.example.test")
    )
    async with serving(proxied) as url:
        document = (await httpx.AsyncClient().get(f"{url}{METADATA}")).json()
        refused = await post_initialize(url, {})
    assert document["resource"] == "https://analytics.example.test/mcp"
    assert (
        'resource_metadata="https://analytics.example.test/.well-known/oauth-protected-resource/mcp"'
        in refused.headers["www-authenticate"]
    )


def test_oauth_without_a_url_to_name_in_the_metadata_refuses_to_start(runtime, issuer_keys, tmp_path):
    """Listening on 0.0.0.0 without PUBLIC_BASE_URL there is no URL the metadata could name."""
    from mcp_server.http import build_http_app
    from mcp_server.server import build_app

    pem = tmp_path / "issuer.pem"
    pem.write_text(issuer_keys.public_key)
    env = {"OAUTH_ISSUER": ISSUER, "OAUTH_PUBLIC_KEY": str(pem), "OAUTH_AUDIENCE": AUDIENCE}
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        build_http_app(build_app(with_oauth(runtime, env)), base_url=None)


async def test_a_token_may_scrape_metrics_like_a_key(pem_server, issuer_keys, stranger_keys):
    async with httpx.AsyncClient() as http:
        good = await http.get(
            f"{pem_server}/metrics", headers={"Authorization": f"Bearer {token(issuer_keys)}"}
        )
        forged = await http.get(
            f"{pem_server}/metrics", headers={"Authorization": f"Bearer {token(stranger_keys)}"}
        )
    assert good.status_code == 200
    assert forged.status_code == 401
    assert f'resource_metadata="{pem_server}{METADATA}"' in forged.headers["www-authenticate"]


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_api_keys_keep_working_beside_oauth(pem_server, api_keys, header):
    value = api_keys["analyst"] if header == "X-API-Key" else f"Bearer {api_keys['analyst']}"
    async with mcp_session(pem_server, {header: value}) as session:
        result = await session.call_tool("summary_snapshot", {})
    assert not result.is_error, result.content


async def test_without_oauth_there_is_no_metadata_and_the_401_names_only_the_realm(runtime, issuer_keys):
    async with serving(instance(runtime)) as url:
        metadata = await httpx.AsyncClient().get(f"{url}{METADATA}")
        refused = await post_initialize(url, {"Authorization": f"Bearer {token(issuer_keys)}"})
    assert metadata.status_code == 404
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="analytics-mcp"'


@asynccontextmanager
async def jwks_issuer(keys: RSAKeyPair, kid: str):
    """A tiny issuer on a free loopback port serving its key set at /jwks.json; yields its base URL."""
    public = jwk.import_key(keys.public_key, "RSA").as_dict(private=False)
    key_set = {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}

    async def jwks(request: Any) -> JSONResponse:
        return JSONResponse(key_set)

    async with served(Starlette(routes=[Route("/jwks.json", jwks)]), lifespan="auto") as url:
        yield url


async def test_tokens_are_checked_against_the_issuers_jwks(runtime, issuer_keys, stranger_keys):
    async with jwks_issuer(issuer_keys, kid="key-1") as issuer:
        env = {"OAUTH_ISSUER": issuer, "OAUTH_JWKS_URL": f"{issuer}/jwks.json", "OAUTH_AUDIENCE": AUDIENCE}
        async with serving(with_oauth(runtime, env)) as url:
            good = token(issuer_keys, issuer=issuer, kid="key-1")
            async with mcp_session(url, {"Authorization": f"Bearer {good}"}) as session:
                result = await session.call_tool("summary_snapshot", {})
            assert not result.is_error, result.content
            forged = token(stranger_keys, issuer=issuer, kid="key-1")
            refused = await post_initialize(url, {"Authorization": f"Bearer {forged}"})
            assert refused.status_code == 401
            unknown_key = token(issuer_keys, issuer=issuer, kid="key-2")
            assert (await post_initialize(url, {"Authorization": f"Bearer {unknown_key}"})).status_code == 401


@pytest.mark.parametrize(
    "env, complaint",
    [
        (
            {
                "OAUTH_ISSUER": "http://issuer.example.test",
                "OAUTH_JWKS_URL": "https://i/j",
                "OAUTH_AUDIENCE": "a",
            },
            "https",
        ),
        ({"OAUTH_ISSUER": ISSUER, "OAUTH_AUDIENCE": "a"}, "exactly one"),
        (
            {
                "OAUTH_ISSUER": ISSUER,
                "OAUTH_JWKS_URL": "https://i/j",
                "OAUTH_PUBLIC_KEY": "/k",
                "OAUTH_AUDIENCE": "a",
            },
            "exactly one",
        ),
        ({"OAUTH_ISSUER": ISSUER, "OAUTH_JWKS_URL": "https://i/j"}, "OAUTH_AUDIENCE"),
        (
            {"OAUTH_ISSUER": ISSUER, "OAUTH_JWKS_URL": "http://10.0.0.1/j", "OAUTH_AUDIENCE": "a"},
            "OAUTH_JWKS_URL",
        ),
        (
            {"OAUTH_ISSUER": ISSUER, "OAUTH_PUBLIC_KEY": "/nonexistent/key.pem", "OAUTH_AUDIENCE": "a"},
            "readable",
        ),
        ({"OAUTH_JWKS_URL": "https://i/j"}, "OAUTH_ISSUER"),
        (
            {
                "OAUTH_ISSUER": ISSUER,
                "OAUTH_JWKS_URL": "https://i/j",
                "OAUTH_AUDIENCE": "a",
                "OAUTH_ALGORITHM": "HS256",
            },
            "OAUTH_ALGORITHM",
        ),
    ],
)
def test_oauth_settings_are_validated(env, complaint):
    with pytest.raises(ConfigError, match=complaint):
        parse_oauth(env)


def test_a_private_key_file_is_refused_as_oauth_public_key(tmp_path: Path, issuer_keys):
    pem = tmp_path / "private.pem"
    pem.write_text(issuer_keys.private_key.get_secret_value())
    env = {"OAUTH_ISSUER": ISSUER, "OAUTH_PUBLIC_KEY": str(pem), "OAUTH_AUDIENCE": "a"}
    with pytest.raises(ConfigError, match="public key"):
        parse_oauth(env)


def test_oauth_is_off_without_an_issuer_and_the_role_claim_defaults_to_role():
    assert parse_oauth({}) is None
    settings = parse_oauth(
        {
            "OAUTH_ISSUER": "http://127.0.0.1:9000",
            "OAUTH_JWKS_URL": "http://localhost:9000/k",
            "OAUTH_AUDIENCE": "a",
        }
    )
    assert settings is not None and settings.role_claim == "role"
