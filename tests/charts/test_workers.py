"""The chart worker pool: how many processes (CHART_WORKERS) and that they only take spare CPU, so
queries and the event loop stay responsive while charts render."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

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


def _autogroups() -> bool:
    flag = Path("/proc/sys/kernel/sched_autogroup_enabled")
    return flag.exists() and flag.read_text().strip() == "1"


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
async def test_chart_workers_take_only_spare_cpu(connect, runtime):
    async with connect("analyst") as client:
        answer = await call(client, "create_visualization", data=CHURN, chart_type="bar")
    assert answer["format"] == "png"
    renderer = visualize._renderer(runtime)
    assert renderer.workers == visualize.render_workers(runtime.settings.chart_workers)
    processes = list(renderer.executor._processes.values())
    assert len(processes) == renderer.workers
    pids = [process.pid for process in processes]

    niceness = visualize.RENDER_NICENESS
    # Each worker lowers its priority in its initializer, as it starts: wait until all got there.
    assert await _settled(lambda pid: os.getpriority(os.PRIO_PROCESS, pid) == niceness, pids) == [True] * len(
        pids
    )
    if _autogroups():
        # A session, and so an autogroup, of its own, niced: its CPU time is not charged to the server's.
        def settled(pid: int) -> bool:
            return os.getsid(pid) == pid and Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == str(
                niceness
            )

        assert await _settled(settled, pids) == [True] * len(pids)
        assert os.getsid(0) not in pids
        groups = [Path(f"/proc/{pid}/autogroup").read_text().split() for pid in pids]
        assert [group[-1] for group in groups] == [str(niceness)] * len(pids)
        # The test's own process may sit in the root task group (a CI runner's cgroup, or a session
        # that never called setsid): the kernel then prints nothing for it, and that is no worker's group.
        own = Path("/proc/self/autogroup").read_text().split()
        assert all(group[0].startswith("/autogroup-") for group in groups)
        assert not own or own[0] not in {group[0] for group in groups}
        # and not SCHED_IDLE on top (with its own autogroup that made waking queries wait a tick)
        assert [os.sched_getscheduler(pid) for pid in pids] == [os.SCHED_OTHER] * len(pids)
    else:
        assert await _settled(lambda pid: os.sched_getscheduler(pid) == os.SCHED_IDLE, pids) == [True] * len(
            pids
        )


async def test_an_inline_plotly_page_arrives_whole_though_the_worker_leaves_plotly_js_out(connect):
    from plotly.offline import get_plotlyjs

    from analytics import charts
    from analytics.chart_data import ChartSpec

    spec = ChartSpec("bar", x="account_type", y=("churn_rate",), format="html")
    job = charts.draw(CHURN, spec)  # what a worker sends back: the page without plotly.js
    script = get_plotlyjs().encode()
    assert job.plotly_at is not None and len(job.image) < 400_000
    async with connect("analyst") as client:
        answer = await call(client, "create_visualization", data=CHURN, chart_type="bar", format="html")
    page = base64.b64decode(answer["image"], validate=True)
    assert answer["size_bytes"] == len(page) == job.size_bytes
    assert page.count(script) == 1
    head, _, tail = page.partition(script)
    assert head.rstrip().endswith(b"<script>") and tail.lstrip().startswith(b"</script>")
    (trace,) = plotly_figure(page)["data"]
    assert trace["y"] == [row["churn_rate"] for row in sorted(CHURN["rows"], key=lambda r: -r["churn_rate"])]
