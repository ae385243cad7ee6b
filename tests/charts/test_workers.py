"""The chart worker pool: how many processes (CHART_WORKERS) and that they run niced, so
queries and the event loop come first for the CPU while charts render."""

from __future__ import annotations

import asyncio
import os

import pytest

from mcp_server.config import ConfigError, Settings
from mcp_server.tools import visualize
from tests.charts.helpers import plotly_figure
from tests.charts.test_tool import CHURN
from tests.support import call


def test_chart_workers_setting_defaults_to_one_fewer_than_the_cores():
    assert Settings.from_env({}).chart_workers == 0
    assert Settings.from_env({"CHART_WORKERS": "3"}).chart_workers == 3
    with pytest.raises(ConfigError, match="CHART_WORKERS"):
        Settings.from_env({"CHART_WORKERS": "-1"})
    assert visualize.render_workers(3) == 3
    assert visualize.render_workers(0) == max(1, (os.cpu_count() or 2) - 1)


async def _settled(check, pids: list[int]) -> list[bool]:
    """Each worker runs its initializer as it starts: give a just-spawned one a moment to get there."""
    for _ in range(300):
        states = [check(pid) for pid in pids]
        if all(states):
            break
        await asyncio.sleep(0.1)
    return states


async def test_chart_workers_render_at_low_priority(connect, runtime):
    own = os.getpriority(os.PRIO_PROCESS, 0)
    async with connect("analyst") as client:
        answer = await call(client, "create_visualization", data=CHURN, chart_type="bar")
    assert answer["format"] == "png"
    renderer = runtime.services.charts
    assert renderer.workers == visualize.render_workers(runtime.settings.chart_workers)
    processes = list(renderer.executor._processes.values())
    assert len(processes) == renderer.workers
    pids = [process.pid for process in processes]
    assert os.getpid() not in pids
    # Each worker lowers its priority in its initializer, as it starts: wait until all got there.
    niceness = visualize.RENDER_NICENESS
    assert await _settled(lambda pid: os.getpriority(os.PRIO_PROCESS, pid) == niceness, pids) == [True] * len(
        pids
    )
    assert os.getpriority(os.PRIO_PROCESS, 0) == own, "only the workers are niced, not the server"


def test_a_worker_hands_back_a_small_html_page_that_loads_plotly_from_the_server():
    from analytics import charts
    from analytics.chart_data import ChartSpec

    src = "http://127.0.0.1:8000/assets/plotly.min.js?v=1"
    spec = ChartSpec("bar", x="account_type", y=("churn_rate",), format="html", plotly_src=src)
    job = charts.draw(CHURN, spec)  # what a worker sends back through the pipe
    assert job.size_bytes == len(job.content) < 50_000
    assert job.content.count(b"<script") == 2, "the plotly.js reference and the figure, nothing inlined"
    assert f'<script charset="utf-8" src="{src}"></script>'.encode() in job.content
    (trace,) = plotly_figure(job.content)["data"]
    assert trace["y"] == [row["churn_rate"] for row in sorted(CHURN["rows"], key=lambda r: -r["churn_rate"])]
