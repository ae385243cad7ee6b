"""The chart worker pool of one runtime: low-priority processes that draw charts off the event loop.

Started on the first chart (a server that draws none never spawns a process), stopped when the
runtime closes; a runaway chart's workers are killed and replaced (restart).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import pandas as pd

from analytics.chart_data import ChartSpec
from analytics.charts import render_chart

log = logging.getLogger(__name__)

RENDER_NICENESS = 19  # workers yield the CPU to queries and the event loop when both want it


def render_workers(configured: int) -> int:
    """CHART_WORKERS, or (0) one fewer than the cores, at least one: a core stays free for the event
    loop and PostgreSQL even when every worker is drawing."""
    return configured if configured > 0 else max(1, (os.cpu_count() or 2) - 1)


def lower_priority(niceness: int) -> None:
    """A worker's initializer: it runs niced, so queries and the event loop come first for the CPU."""
    try:
        os.nice(niceness)
    except (AttributeError, OSError):  # no nice() on this platform, or not allowed: render at normal priority
        pass


def warm_up() -> None:
    """Load fonts and plotly once per worker so the first real chart is not slow."""
    render_chart(
        pd.DataFrame({"x": ["a", "b"], "y": [1.0, 2.0]}),
        ChartSpec("bar", x="x", y=("y",), width=200, height=150),
    )
    import plotly.graph_objects  # noqa: F401


def start_executor(workers: int) -> Executor:
    try:
        # spawn, not fork: the server process has threads (asyncpg, redis) that fork would copy mid-flight.
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=lower_priority,
            initargs=(RENDER_NICENESS,),
        )
        for _ in range(workers):
            pool.submit(warm_up)
        return pool
    except (OSError, NotImplementedError, PermissionError) as error:  # no processes here: threads will do
        log.warning("chart worker processes unavailable; rendering in threads", extra={"error": str(error)})
        return ThreadPoolExecutor(workers, thread_name_prefix="chart")


class ChartPool:
    def __init__(self, configured_workers: int) -> None:
        self.workers = render_workers(configured_workers)
        self.slots = asyncio.Semaphore(self.workers)
        self._executor: Executor | None = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = start_executor(self.workers)
        return self._executor

    def restart(self) -> None:
        """Kill the pool's processes (a runaway chart must not keep a worker) and start a fresh pool."""
        old = self._executor
        if isinstance(old, ProcessPoolExecutor):
            for process in list(getattr(old, "_processes", {}).values()):
                process.kill()
            old.shutdown(wait=False, cancel_futures=True)
            self._executor = start_executor(self.workers)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
