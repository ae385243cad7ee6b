"""create_visualization: charts as base64 PNG/SVG or interactive HTML, from inline data or a session dataset.

Rendering is CPU work. It runs in a small pool of worker processes (one pool per runtime): a thread
would hold the GIL for most of a render and stall the event loop, a process does not, and a chart
that overruns its time limit can really be stopped (its worker is killed and replaced). The workers
run at the lowest priority (analytics.charts.lower_priority), so they mostly use CPU that queries,
PostgreSQL and the event loop leave over, and hand back the image already base64-encoded.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import mcp_types
import pandas as pd
from fastmcp.tools.base import ToolResult
from pydantic import Field

from analytics import charts
from analytics.chart_data import CHART_TYPES, ChartSpec
from analytics.errors import InvalidInput, Timeout, Unavailable
from mcp_server.app import App
from mcp_server.auth import ANALYST, current_identity
from mcp_server.runtime import Runtime
from mcp_server.stores import session_store

log = logging.getLogger(__name__)

RENDER_NICENESS = 19  # workers yield the CPU to queries and the event loop when both want it
RENDER_TIMEOUT_SECONDS = 30.0  # per chart, once it has a worker
QUEUE_TIMEOUT_SECONDS = 60.0  # waiting for a worker
MAX_INLINE_ROWS = 100_000  # more should come by reference from a session dataset
MAX_OUTPUT_BYTES = 12_000_000  # rendered bytes (an inline-plotly.js page is about 5 MB)

ChartType = Literal[
    "bar",
    "grouped_bar",
    "stacked_bar",
    "line",
    "scatter",
    "histogram",
    "heatmap",
    "correlation_heatmap",
    "box",
    "pie",
]
assert set(ChartType.__args__) == set(CHART_TYPES)  # type: ignore[attr-defined]


def render_workers(configured: int) -> int:
    """CHART_WORKERS, or (0) one fewer than the cores, at least one: a core stays free for the event
    loop and PostgreSQL even when every worker is drawing."""
    return configured if configured > 0 else max(1, (os.cpu_count() or 2) - 1)


@dataclass
class _Renderer:
    executor: Executor
    slots: asyncio.Semaphore
    workers: int


def _start_executor(workers: int) -> Executor:
    try:
        # spawn, not fork: the server process has threads (asyncpg, redis) that fork would copy mid-flight.
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=charts.lower_priority,
            initargs=(RENDER_NICENESS,),
        )
        for _ in range(workers):
            pool.submit(charts.warm_up)
        return pool
    except (OSError, NotImplementedError, PermissionError) as error:  # no processes here: threads will do
        log.warning("chart worker processes unavailable; rendering in threads", extra={"error": str(error)})
        return ThreadPoolExecutor(workers, thread_name_prefix="chart")


def _renderer(runtime: Runtime) -> _Renderer:
    renderer = runtime.extras.get("chart_renderer")
    if renderer is None:
        workers = render_workers(runtime.settings.chart_workers)
        renderer = _Renderer(_start_executor(workers), asyncio.Semaphore(workers), workers)
        runtime.extras["chart_renderer"] = renderer

        async def stop_workers() -> None:
            renderer.executor.shutdown(wait=False, cancel_futures=True)

        runtime.on_close.append(stop_workers)
    assert isinstance(renderer, _Renderer)
    return renderer


def _restart_workers(renderer: _Renderer) -> None:
    """Kill the pool's processes (a runaway chart must not keep a worker) and start a fresh pool."""
    old = renderer.executor
    if isinstance(old, ProcessPoolExecutor):
        for process in list(getattr(old, "_processes", {}).values()):
            process.kill()
        old.shutdown(wait=False, cancel_futures=True)
        renderer.executor = _start_executor(renderer.workers)


async def render_off_loop(
    runtime: Runtime, data: Any, spec: ChartSpec, part: str | None, inline: bool
) -> charts.ChartJob:
    """Normalise, draw and encode in the chart pool, within the per-chart time limit."""
    renderer = _renderer(runtime)
    try:
        await asyncio.wait_for(renderer.slots.acquire(), QUEUE_TIMEOUT_SECONDS)
    except TimeoutError:
        raise Unavailable("every chart worker is busy; retry in a few seconds") from None
    try:
        executor = renderer.executor
        future = asyncio.get_running_loop().run_in_executor(
            executor, charts.draw, data, spec, part, MAX_INLINE_ROWS if inline else None
        )
        try:
            result: charts.ChartJob = await asyncio.wait_for(future, RENDER_TIMEOUT_SECONDS)
            if result.plotly_at is not None:  # first call: imports plotly; then one 6 MB join
                result.image = await asyncio.to_thread(charts.splice_plotly, result.image, result.plotly_at)
                result.plotly_at = None
            return result
        except TimeoutError:
            if renderer.executor is executor:
                _restart_workers(renderer)
            raise Timeout(
                f"the chart took longer than {RENDER_TIMEOUT_SECONDS:.0f} s to draw; chart fewer points "
                "(filter or aggregate) or a smaller size"
            ) from None
        except BrokenProcessPool:
            if renderer.executor is executor:
                _restart_workers(renderer)
            raise Unavailable("the chart worker was restarted; retry the chart") from None
    finally:
        renderer.slots.release()


def _reference(data: dict[str, Any], session_id: str | None) -> tuple[str, str, str] | None:
    """(session_id, 'dataset'|'key', name) when `data` points into a session instead of holding data."""
    for field in ("dataset", "key"):
        name = data.get(field)
        if isinstance(name, str) and set(data) <= {"session_id", field}:
            session = data.get("session_id", session_id)
            if not isinstance(session, str):
                raise InvalidInput(
                    f"a reference {{{field}: ...}} needs a session_id (in data or as a parameter)"
                )
            return session, field, name
    return None


def register(app: App) -> None:
    runtime = app.runtime

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": False})
    async def create_visualization(
        data: Annotated[
            dict[str, Any] | list[dict[str, Any]],
            Field(
                description="a query result {rows, columns}, a column map {column: [values]}, an analysis "
                "result (correlation matrix, by_segment, by_month), or a reference {session_id, dataset}"
            ),
        ],
        chart_type: Annotated[ChartType, Field(description="what to draw")],
        title: Annotated[str | None, Field(max_length=200, description="default: from the columns")] = None,
        x_axis: Annotated[
            str | None, Field(max_length=200, description="x column (categories for bar/pie)")
        ] = None,
        y_axis: Annotated[
            str | list[str] | None,
            Field(description="y column, or several for one series each (line, bar)"),
        ] = None,
        format: Annotated[
            Literal["png", "svg", "html"], Field(description="html is interactive (plotly)")
        ] = "png",
        width: Annotated[int, Field(ge=100, le=4000, description="pixels")] = 800,
        height: Annotated[int, Field(ge=100, le=4000, description="pixels")] = 600,
        hue: Annotated[
            str | None, Field(max_length=200, description="column whose values make series")
        ] = None,
        group_by: Annotated[str | None, Field(max_length=200, description="same as hue")] = None,
        value: Annotated[
            str | None, Field(max_length=200, description="heatmap: column in the cells")
        ] = None,
        aggregate: Annotated[
            Literal["sum", "mean", "median", "count", "min", "max"] | None,
            Field(description="how repeated x values combine (bar: sum, line/heatmap: mean)"),
        ] = None,
        bins: Annotated[
            int | None, Field(ge=1, le=200, description="histogram bins (default: automatic)")
        ] = None,
        sort: Annotated[
            Literal["auto", "x", "value_desc", "value_asc", "none"], Field(description="bar order")
        ] = "auto",
        part: Annotated[
            str | None, Field(max_length=64, description="analysis result part to chart, e.g. by_month")
        ] = None,
        plotly_js: Annotated[
            Literal["inline", "cdn"],
            Field(description="html: embed plotly.js (offline) or load it from a CDN"),
        ] = "inline",
        session_id: Annotated[
            str | None, Field(description="session holding the data, or to save into")
        ] = None,
        save_as: Annotated[
            str | None, Field(description="store the chart in session_id under this key")
        ] = None,
    ) -> ToolResult:
        """Draw a chart (bar, grouped/stacked bar, line, scatter, histogram, heatmap, correlation heatmap, box,
        pie) as base64 PNG, SVG or interactive HTML; large data is aggregated or sampled and `notes` say so."""
        if save_as is not None and session_id is None:
            raise InvalidInput("save_as needs session_id: the session to store the chart in")
        if hue and group_by and hue != group_by:
            raise InvalidInput("give hue or group_by (they mean the same), not two different columns")
        spec = ChartSpec(
            chart_type=chart_type,
            x=x_axis,
            y=tuple([y_axis] if isinstance(y_axis, str) else (y_axis or [])),
            hue=hue or group_by,
            value=value,
            title=title,
            format=format,
            width=width,
            height=height,
            aggregate=aggregate,
            bins=bins,
            sort=sort,
            plotly_js=plotly_js,
        )
        started = time.perf_counter()
        identity = current_identity()
        reference = _reference(data, session_id) if isinstance(data, dict) else None
        source: Any = data
        if reference is not None:
            store, (session, kind, name) = session_store(runtime), reference
            if kind == "dataset":
                source = await store.load_dataset(identity, session, name)
            else:
                source = (await store.read(identity, session, name))["value"]
        job = await render_off_loop(runtime, source, spec, part, inline=not isinstance(source, pd.DataFrame))
        if job.size_bytes > MAX_OUTPUT_BYTES:
            raise InvalidInput(
                f"the chart is {job.size_bytes:,} bytes, above the {MAX_OUTPUT_BYTES:,} limit; use png, "
                "a smaller width/height, fewer points, or plotly_js='cdn'"
            )
        answer: dict[str, Any] = {
            "image": job.image,
            "format": job.format,
            "mime_type": job.mime_type,
            "dimensions": {"width": job.width, "height": job.height},
            "chart_type": chart_type,
            "title": job.title,
            "x_label": job.x_label,
            "y_label": job.y_label,
            "points": job.points,
            "notes": job.notes,
            "size_bytes": job.size_bytes,
            "render_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if reference is not None:
            answer["source"] = {"session_id": reference[0], reference[1]: reference[2]}
        if save_as is not None and session_id is not None:
            answer["saved"] = await session_store(runtime).save_value(
                identity, session_id, save_as, answer, kind="chart"
            )
        summary = (
            f"{chart_type} chart '{answer['title']}' as {format}, {width}x{height} px, "
            f"{answer['points']:,} rows; base64 in structured content 'image'"
            + (f"; notes: {'; '.join(answer['notes'])}" if answer["notes"] else "")
        )
        content: list[Any] = [mcp_types.TextContent(type="text", text=summary)]
        if format == "png":
            content.insert(0, mcp_types.ImageContent(type="image", data=job.image, mime_type="image/png"))
        return ToolResult(content=content, structured_content=answer)
