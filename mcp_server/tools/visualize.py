"""create_visualization: PNG, SVG or interactive HTML charts of inline data, session datasets or analysis
results, drawn in the chart pool's worker processes, stored server-side and answered with a resource link."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Annotated, Any, Literal

import mcp_types
import pandas as pd
from fastmcp.resources import ResourceContent, ResourceResult
from fastmcp.tools.base import ToolResult
from pydantic import Field

from analytics import charts
from analytics.chart_data import AUTO, CHART_TYPES, ChartSpec
from core.errors import InvalidInput, Timeout, Unavailable
from mcp_server.app import App
from mcp_server.auth import ANALYST, EVERYONE
from mcp_server.calls import current_identity
from mcp_server.chartpool import RENDER_NICENESS, render_workers  # noqa: F401 - the pool's knobs, named here too
from mcp_server.runtime import Runtime
from mcp_server.urls import plotly_js_url

log = logging.getLogger(__name__)

RENDER_TIMEOUT_SECONDS = 30.0  # per chart, once it has a worker
QUEUE_TIMEOUT_SECONDS = 60.0  # waiting for a worker
MAX_INLINE_ROWS = 100_000  # more should come by reference from a session dataset
# A chart travels by reference and is read back as one resource: base64 of 700 KB plus the envelope stays
# under the 1 MiB (1,048,576 bytes) an MCP client accepts in one message.
MAX_OUTPUT_BYTES = 700_000
MAX_PREVIEW_BYTES = 100_000  # a PNG up to this size also comes inline as image content

ChartType = Literal[(AUTO, *CHART_TYPES)]  # type: ignore[valid-type]  # an enum in the input schema


async def render_off_loop(
    runtime: Runtime, data: Any, spec: ChartSpec, part: str | None, inline: bool
) -> charts.ChartJob:
    """Normalise, draw and encode in the chart pool, within the per-chart time limit."""
    renderer = runtime.services.charts
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
            return result
        except TimeoutError:
            if renderer.executor is executor:
                renderer.restart()
            raise render_timeout(os.getloadavg()[0], os.cpu_count() or 1) from None
        except BrokenProcessPool:
            if renderer.executor is executor:
                renderer.restart()
            raise Unavailable("the chart worker was restarted; retry the chart") from None
    finally:
        renderer.slots.release()


def render_timeout(load: float, cores: int) -> Timeout:
    """A chart past RENDER_TIMEOUT_SECONDS: with every core busy, the wait is the server's load, not the
    data (the same chart draws in time once the load passes), so the answer says to retry."""
    if load >= cores:
        return Timeout(
            f"the chart did not finish in {RENDER_TIMEOUT_SECONDS:.0f} s because the server is busy "
            f"(CPU load {load:.1f} on {cores} cores), not because of the data; retry in a minute"
        )
    return Timeout(
        f"the chart took longer than {RENDER_TIMEOUT_SECONDS:.0f} s to draw; chart fewer points "
        "(filter or aggregate) or a smaller size"
    )


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
                description="an analyze_data answer (drawn as its own view), a query result {rows, columns}, "
                "a column map {column: [values]}, or a reference {session_id, dataset} / {session_id, key}"
            ),
        ],
        chart_type: Annotated[
            ChartType,
            Field(
                description="what to draw; auto: an analysis result's own view (e.g. churn rate by "
                "segment with intervals), else bars (a line over dates)"
            ),
        ] = "auto",
        title: Annotated[str | None, Field(max_length=200, description="default: from the data")] = None,
        x_axis: Annotated[
            str | None, Field(max_length=200, description="x column (categories for bar/pie)")
        ] = None,
        y_axis: Annotated[
            str | list[str] | None,
            Field(description="y column, or several for one series each (line, bar)"),
        ] = None,
        format: Annotated[
            Literal["png", "svg", "html"],
            Field(
                description="html is interactive (plotly, loaded from this server's /assets/plotly.min.js)"
            ),
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
            str | None,
            Field(max_length=64, description="analysis result part to chart as a table, e.g. by_month"),
        ] = None,
        session_id: Annotated[
            str | None, Field(description="session holding the data, or to save into")
        ] = None,
        save_as: Annotated[
            str | None, Field(description="store the chart in session_id under this key")
        ] = None,
    ) -> ToolResult:
        """Draw a chart as PNG, SVG or interactive HTML, stored on the server and returned as a resource link
        (a small PNG also inline); `plotted` states the columns, aggregation and values drawn."""
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
            plotly_src=plotly_js_url(runtime.settings),
        )
        started = time.perf_counter()
        identity = current_identity()
        reference = _reference(data, session_id) if isinstance(data, dict) else None
        source: Any = data
        if reference is not None:
            store, (session, kind, name) = runtime.services.session_store, reference
            if kind == "dataset":
                source = await store.load_dataset(identity, session, name)
            else:
                source = (await store.read(identity, session, name))["value"]
        job = await render_off_loop(runtime, source, spec, part, inline=not isinstance(source, pd.DataFrame))
        if job.size_bytes > MAX_OUTPUT_BYTES:
            raise InvalidInput(
                f"the chart is {job.size_bytes:,} bytes, above the {MAX_OUTPUT_BYTES:,} one response can carry; "
                "use png, a smaller width/height, or fewer points (filter or aggregate)"
            )
        answer: dict[str, Any] = {
            "format": job.format,
            "mime_type": job.mime_type,
            "dimensions": {"width": job.width, "height": job.height},
            "chart_type": job.plotted["chart"],
            "title": job.title,
            "x_label": job.x_label,
            "y_label": job.y_label,
            "points": job.points,
            "notes": job.notes,
            "plotted": job.plotted,
            "size_bytes": job.size_bytes,
        }
        if reference is not None:
            answer["source"] = {"session_id": reference[0], reference[1]: reference[2]}
        if save_as is not None and session_id is not None:
            saved = await runtime.services.session_store.save_chart(
                identity, session_id, save_as, answer, job.content
            )
            answer["saved"] = saved
            link = {"uri": saved["uri"], "mime_type": job.mime_type, "size_bytes": job.size_bytes}
        else:
            stored = await runtime.services.artifact_store.put(
                identity, job.content, job.mime_type, job.title
            )
            link = {key: stored[key] for key in ("uri", "mime_type", "size_bytes", "expires_at")}
        answer["link"] = link
        answer["render_ms"] = round((time.perf_counter() - started) * 1000, 1)
        preview = format == "png" and job.size_bytes <= MAX_PREVIEW_BYTES
        summary = (
            f"{answer['chart_type']} chart '{job.title}' as {format}, {width}x{height} px, {job.points:,} rows; "
            f"read it at {link['uri']}"
            + (" (also shown inline)" if preview else "")
            + (f"; notes: {'; '.join(job.notes)}" if job.notes else "")
            + f"; plotted {plotted_text(job.plotted)}"
        )
        content: list[Any] = [
            mcp_types.TextContent(type="text", text=summary),
            mcp_types.ResourceLink(
                type="resource_link",
                uri=link["uri"],
                name=job.title[:100],
                description=f"{answer['chart_type']} chart, {width}x{height} px",
                mime_type=job.mime_type,
                size=job.size_bytes,
            ),
        ]
        if preview:
            image = base64.b64encode(job.content).decode("ascii")
            content.insert(0, mcp_types.ImageContent(type="image", data=image, mime_type="image/png"))
        return ToolResult(content=content, structured_content=answer)

    @app.resource("artifact://{artifact_id}", roles=EVERYONE, name="artifact")
    async def artifact(artifact_id: str) -> ResourceResult:
        """A chart you drew without a session (kept an hour, for you only): the PNG, SVG or HTML file itself."""
        meta, content = await runtime.services.artifact_store.get(current_identity(), artifact_id)
        return ResourceResult([file_content(content, meta["mime_type"])])


def plotted_text(plotted: dict[str, Any], series: int = 3, labels: int = 12) -> str:
    """The first values drawn, in brief for the text content (structured content has them all)."""
    parts = []
    for line in plotted["series"][:series]:
        values = list(line["values"].items())
        shown = ", ".join(
            f"{label} {value:.4g}" if value is not None else f"{label} -" for label, value in values[:labels]
        )
        more = len(values) - labels + (line.get("labels_total", len(values)) - len(values))
        parts.append(f"{line['name']}: {shown}" + (f" (+{more} more)" if more > 0 else ""))
    hidden = len(plotted["series"]) - series
    return "; ".join(parts) + (f"; +{hidden} more series" if hidden > 0 else "")


def file_content(content: bytes | str, mime_type: str) -> ResourceContent:
    """A stored file (or a value's JSON) as resource content: text for SVG and HTML (readable as is), bytes
    for images."""
    if isinstance(content, bytes) and not mime_type.startswith("image/png"):
        content = content.decode("utf-8")
    return ResourceContent(content, mime_type=mime_type)
