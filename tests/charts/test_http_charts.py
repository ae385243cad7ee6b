"""HTML charts over real HTTP: plotly.js comes from the server's own public /assets route (long cached),
the page references nothing else, and every chart answer stays far below the 1 MiB a client accepts."""

from __future__ import annotations

import re
from importlib import resources

import httpx
import pytest

from tests.support import call, mcp_session, serving

pytestmark = pytest.mark.http

URL = re.compile(r"""https?://[^\s"'<>)\\]+""")
ONE_MIB = 1_048_576
BARS = {"segment": ["Basic", "Premium", "Enterprise"], "churn_rate": [0.31, 0.18, 0.08]}


@pytest.fixture(scope="module")
async def base_url(runtime):
    async with serving(runtime) as url:
        yield url


async def test_plotly_js_is_served_without_a_key_with_long_cache_headers(base_url):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base_url}/assets/plotly.min.js")
    bundled = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    assert response.status_code == 200
    assert response.content == bundled
    assert response.headers["content-type"].startswith("text/javascript")
    cache = response.headers["cache-control"]
    assert "public" in cache and int(re.search(r"max-age=(\d+)", cache).group(1)) >= 30 * 86_400


async def test_an_html_chart_over_http_references_only_the_servers_own_plotly_js(base_url, api_keys):
    async with mcp_session(base_url, {"X-API-Key": api_keys["analyst"]}) as session:
        result = await session.call_tool(
            "create_visualization", {"data": BARS, "chart_type": "bar", "format": "html"}
        )
        assert not result.is_error
        link = result.structured_content["link"]
        read = await session.read_resource(link["uri"])
    page = read.contents[0].text
    assert read.contents[0].mime_type == "text/html"
    urls = set(URL.findall(page))
    (script,) = urls  # one URL in the whole page: the server's plotly.js, no CDN, no other host
    assert script.startswith(f"{base_url}/assets/plotly.min.js")
    assert f'<script charset="utf-8" src="{script}"></script>' in page
    assert len(page) < 100_000 and "Plotly.newPlot" in page, "plotly.js is referenced, not inlined"
    async with httpx.AsyncClient() as http:
        assert (await http.get(script)).status_code == 200, "the referenced script loads, without a key"
    # The answer and the chart it links to each fit in one message many times over.
    assert len(result.model_dump_json(by_alias=True)) < 20_000
    assert len(read.model_dump_json(by_alias=True)) < ONE_MIB


async def test_the_largest_chart_the_server_draws_still_reads_back_under_one_mib(base_url, api_keys):
    points = {"x": list(range(4_000)), "y": [(i * 7919) % 1000 for i in range(4_000)]}
    async with mcp_session(base_url, {"X-API-Key": api_keys["analyst"]}) as session:
        big = await session.call_tool(
            "create_visualization", {"data": points, "chart_type": "scatter", "format": "svg"}
        )
        assert not big.is_error and big.structured_content["size_bytes"] > 600_000
        read = await session.read_resource(big.structured_content["link"]["uri"])
        too_big = await session.call_tool(
            "create_visualization",
            {"data": points, "chart_type": "scatter", "width": 4000, "height": 4000},
        )
    assert len(big.model_dump_json(by_alias=True)) < 20_000
    assert 600_000 < len(read.model_dump_json(by_alias=True)) < ONE_MIB
    assert too_big.is_error and "one response can carry" in too_big.content[0].text


async def test_public_base_url_is_what_html_charts_reference_behind_a_proxy(connect, runtime, monkeypatch):
    proxied = runtime.settings.with_changes(public_base_url="https://analytics.example.com/mcp-proxy")
    monkeypatch.setattr(runtime, "settings", proxied)
    async with connect("analyst") as client:
        answer = await call(client, "create_visualization", data=BARS, format="html")
        (content,) = await client.read_resource(answer["link"]["uri"])
    (script,) = set(URL.findall(content.text))
    assert script.startswith("https://analytics.example.com/mcp-proxy/assets/plotly.min.js?v=")
