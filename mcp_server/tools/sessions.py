"""Session tools: an agent's encrypted working context in Redis (datasets, analyses, charts, values)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastmcp.resources import ResourceResult
from pydantic import Field

from mcp_server.app import App
from mcp_server.auth import ADMIN, ANALYST, EVERYONE
from mcp_server.calls import current_identity
from mcp_server.tools.visualize import file_content
from sessions.access import KeyName, SessionId
from sessions.rotation import rotate_keys


def register(app: App) -> None:
    runtime = app.runtime

    @app.tool(roles=ANALYST)
    async def session_create(
        data_source: Annotated[str, Field(description="what the session works on, e.g. 'database'")],
        access_level: Annotated[
            Literal["read", "write"], Field(description="what user_id may do: read, or also write")
        ] = "read",
        ttl_seconds: Annotated[
            int, Field(ge=1, description="idle lifetime: every use pushes expiry this far ahead")
        ] = 3600,
        user_id: Annotated[str | None, Field(description="grant this user access (optional)")] = None,
    ) -> dict[str, Any]:
        """Open a session you own: an encrypted store for datasets, analyses, charts and values."""
        store = runtime.services.session_store
        return await store.create(current_identity(), data_source, access_level, ttl_seconds, user_id)

    @app.tool(roles=EVERYONE, annotations={"readOnlyHint": True})
    async def session_read(
        session_id: SessionId,
        key: KeyName,
        offset: Annotated[int, Field(ge=0, description="first dataset row of the preview")] = 0,
        limit: Annotated[int, Field(ge=1, le=1000, description="dataset rows in the preview")] = 20,
    ) -> dict[str, Any]:
        """Read one key of a session; a dataset key gives its columns, row count, source and a page of rows."""
        return await runtime.services.session_store.read(current_identity(), session_id, key, offset, limit)

    @app.resource("session://{session_id}/{key}", roles=EVERYONE, name="session_key")
    async def session_key(session_id: str, key: str) -> ResourceResult:
        """One key of a session you may read, in full: a chart's file (PNG, SVG, HTML), a value's JSON."""
        mime_type, content = await runtime.services.session_store.read_linked(
            current_identity(), session_id, key
        )
        return ResourceResult([file_content(content, mime_type)])

    @app.tool(roles=ANALYST)
    async def session_update(
        session_id: SessionId,
        key: KeyName,
        value: Annotated[Any, Field(description="any JSON value; replaces what the key held")],
    ) -> dict[str, Any]:
        """Store a JSON value under a key of the session (encrypted; refreshes the session's expiry)."""
        return await runtime.services.session_store.update(current_identity(), session_id, key, value)

    @app.tool(roles=ANALYST, annotations={"destructiveHint": True})
    async def session_delete_key(session_id: SessionId, key: KeyName) -> dict[str, Any]:
        """Remove one key and its value from a session (frees room under SESSION_MAX_KEYS and SESSION_MAX_BYTES)."""
        return await runtime.services.session_store.delete_key(current_identity(), session_id, key)

    @app.tool(roles=ANALYST, annotations={"destructiveHint": True})
    async def session_close(
        session_id: SessionId,
        archive: Annotated[
            bool, Field(description="keep it (encrypted) in PostgreSQL for session_restore")
        ] = True,
    ) -> dict[str, Any]:
        """Close a session you own; with archive=true it is saved to PostgreSQL first and can be restored."""
        return await runtime.services.session_store.close(current_identity(), session_id, archive)

    @app.tool(roles=ADMIN, annotations={"destructiveHint": True})
    async def session_delete(session_id: SessionId) -> dict[str, Any]:
        """Delete a session and its archive for good (admin only)."""
        return await runtime.services.session_store.delete(current_identity(), session_id)

    @app.tool(roles=EVERYONE, annotations={"readOnlyHint": True})
    async def session_list(
        archived: Annotated[bool, Field(description="list your archived (closed) sessions instead")] = False,
        all_users: Annotated[bool, Field(description="admin only: every user's sessions")] = False,
    ) -> dict[str, Any]:
        """Your sessions (owned or granted to you) with their keys, sizes and expiry."""
        store = runtime.services.session_store
        if archived:
            return await store.list_archived(current_identity())
        return await store.list_sessions(current_identity(), all_users)

    @app.tool(roles=ANALYST)
    async def session_extend(
        session_id: SessionId,
        ttl_seconds: Annotated[int, Field(ge=1, description="new idle lifetime, counted from now")],
    ) -> dict[str, Any]:
        """Set a session's lifetime (from now) for every one of its keys at once."""
        return await runtime.services.session_store.extend(current_identity(), session_id, ttl_seconds)

    @app.tool(roles=ANALYST)
    async def session_restore(session_id: SessionId) -> dict[str, Any]:
        """Bring a closed, archived session back (its owner or an admin), with a fresh expiry."""
        return await runtime.services.session_store.restore(current_identity(), session_id)

    @app.tool(roles=ADMIN)
    async def session_rotate_keys() -> dict[str, Any]:
        """Re-encrypt every live and archived session under the first SESSION_ENCRYPTION_KEY (after adding a key)."""
        return await rotate_keys(runtime.services.session_store)
