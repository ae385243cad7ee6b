"""File import into a session dataset (CSV/TSV, xlsx, PDF tables) and describe_dataset: types, nulls, summaries."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from analytics.describe import describe
from core.errors import Forbidden, InvalidInput, NotFound, Unavailable
from importers import Imported, ImportOptions, Limits, parse_file
from importers.detect import Requested
from mcp_server.app import App
from mcp_server.auth import ADMIN, ANALYST
from mcp_server.calls import current_identity
from sessions.access import KeyName, SessionId
from sessions.datasets import json_ready, preview_rows
from warehouse import sandbox

_PREVIEW_ROWS = 5

DatasetName = Annotated[
    KeyName, Field(description="dataset name in the session: 1-64 letters, digits, '_', '.', '-'")
]


def register(app: App) -> None:
    runtime = app.runtime

    @app.tool(roles=ANALYST)
    async def import_file(
        session_id: SessionId,
        dataset: DatasetName,
        content_base64: Annotated[str | None, Field(description="the file's bytes, base64-encoded")] = None,
        path: Annotated[
            str | None,
            Field(max_length=1024, description="a file inside the server's IMPORT_DIR (relative path)"),
        ] = None,
        format: Annotated[Requested, Field(description="auto (detected), csv, tsv, xlsx or pdf")] = "auto",
        options: Annotated[
            ImportOptions | None, Field(description="parsing choices; everything is detected by default")
        ] = None,
    ) -> dict[str, Any]:
        """Load a CSV/TSV, xlsx sheet or PDF table into a session dataset, typed, for analyze_data and charts."""
        caller = current_identity()
        session, name = session_id, dataset  # checked and canonical (SessionId, DatasetName)
        if (content_base64 is None) == (path is None):
            raise InvalidInput(
                "give exactly one of content_base64 (the file's bytes) or path (inside IMPORT_DIR)"
            )
        store = runtime.services.session_store
        await store.describe(caller, session)  # an unknown or invisible session fails before the work
        limits = Limits(
            max_bytes=runtime.settings.import_max_bytes,
            max_rows=runtime.settings.dataset_max_rows,
            max_stream_bytes=runtime.settings.import_max_stream_bytes,
        )
        settings = runtime.settings

        def read_and_parse() -> tuple[Imported, dict[str, Any]]:
            """Everything CPU- or disk-bound, in a worker thread: the event loop keeps serving."""
            origin: dict[str, Any]
            if content_base64 is not None:
                content, origin = _decoded(content_base64, limits.max_bytes), {"from": "upload"}
            else:
                content, file_name = read_import_file(settings.import_dir, path or "", limits.max_bytes)
                origin = {"from": "import_dir", "file": file_name}
            imported = parse_file(content, format, options, limits)
            origin |= {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
            return imported, origin

        async with runtime.services.import_slots:
            imported, origin = await asyncio.to_thread(read_and_parse)
        source = {"type": "import", "format": imported.format, **origin, **imported.details}
        saved = await store.save_dataset(caller, session, name, imported.frame, source)
        answer: dict[str, Any] = json_ready(
            {
                "session_id": session,
                "dataset": name,
                "rows": saved["rows"],
                "columns": saved["columns"],
                "source": saved["source"],
                "size_bytes": saved["size_bytes"],
                "preview": preview_rows(imported.frame, 0, _PREVIEW_ROWS),
            }
        )
        return answer

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": True})
    async def describe_dataset(session_id: SessionId, dataset: DatasetName) -> dict[str, Any]:
        """Column types, nulls, distinct counts and numeric/date/text summaries of a session dataset."""
        frame = await runtime.services.session_store.load_dataset(current_identity(), session_id, dataset)
        summary = await asyncio.to_thread(describe, frame) if frame.size > 20_000 else describe(frame)
        described: dict[str, Any] = json_ready(
            {"session_id": session_id.strip().lower(), "dataset": dataset, **summary}
        )
        return described

    @app.tool(roles=ADMIN, annotations={"destructiveHint": True})
    async def load_to_table(
        session_id: SessionId,
        dataset: DatasetName,
        table: Annotated[
            str,
            Field(
                max_length=63, description="new table name in schema sandbox: lower-case letters, digits, _"
            ),
        ],
        replace: Annotated[bool, Field(description="drop and recreate sandbox.<table> if it exists")] = False,
    ) -> dict[str, Any]:
        """Admin: copy a session dataset into a new PostgreSQL table sandbox.<table> so SQL can join it."""
        sandbox.table_name(table)  # refuse a bad name before loading the dataset
        frame = await runtime.services.session_store.load_dataset(current_identity(), session_id, dataset)
        loaded = await sandbox.load_frame(runtime.db, table, frame, replace=replace)
        return {"session_id": session_id.strip().lower(), "dataset": dataset, **loaded}


def _decoded(content_base64: str, max_bytes: int) -> bytes:
    text = content_base64
    if text.startswith("data:") and "," in text[:200]:  # a data: URL
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    if len(text) // 4 * 3 > max_bytes + 3:  # refuse before decoding
        raise InvalidInput(
            f"the file is about {len(text) // 4 * 3:,} bytes, over the import limit of {max_bytes:,}; "
            "split it or filter it first"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "content_base64 is not valid base64; send the file's bytes base64-encoded"
        ) from None


def read_import_file(import_dir: Path | None, relative: str, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of a regular file inside `import_dir` (symlinks resolved first) and its file name."""
    if import_dir is None:
        raise Forbidden(
            "import from a path is turned off on this server (IMPORT_DIR is not set); send content_base64"
        )
    shown = "".join(ch if ch.isprintable() else "?" for ch in relative[:80])
    if not relative.strip() or "\x00" in relative:
        raise InvalidInput("path is empty or malformed; give a file name relative to the import directory")
    try:
        base = import_dir.resolve(strict=True)
        target = (base / relative).resolve()
    except (OSError, RuntimeError):
        raise Unavailable(
            "the import directory cannot be read; ask the operator to check IMPORT_DIR"
        ) from None
    if target == base or not target.is_relative_to(base):
        raise Forbidden(f"path '{shown}' is outside the import directory; give a path relative to it")
    try:
        descriptor = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise NotFound(f"no file '{shown}' in the import directory") from None
    except OSError:
        raise InvalidInput(f"'{shown}' in the import directory cannot be read") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"'{shown}' is not a regular file")
        if info.st_size > max_bytes:
            raise InvalidInput(
                f"the file is {info.st_size:,} bytes, over the import limit of {max_bytes:,}; split it or filter it first"
            )
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            content = handle.read(max_bytes + 1)
    except OSError:  # never let a file error pass for a database outage (the edge maps OSError so)
        raise InvalidInput(f"'{shown}' in the import directory cannot be read") from None
    finally:
        os.close(descriptor)
    if len(content) > max_bytes:
        raise InvalidInput(
            f"the file is over the import limit of {max_bytes:,} bytes; split it or filter it first"
        )
    return content, target.name
