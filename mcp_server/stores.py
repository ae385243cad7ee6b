"""Per-runtime domain stores for the MCP edge: one SessionStore per runtime, wired from its settings."""

from __future__ import annotations

from mcp_server.runtime import Runtime
from sessions.artifacts import ArtifactStore
from sessions.store import SessionStore
from warehouse.archive import SessionArchive

_SESSION_STORE = "session_store"
_ARTIFACT_STORE = "artifact_store"


def session_store(runtime: Runtime) -> SessionStore:
    """The runtime's session store (created on first use, then cached in runtime.extras)."""
    store = runtime.extras.get(_SESSION_STORE)
    if store is None:
        settings = runtime.settings
        store = SessionStore(
            runtime.redis,
            key_prefix=runtime.key(),
            encryption_keys=runtime.encryption_keys,
            archive=SessionArchive(runtime.db),
            max_value_bytes=settings.session_max_value_bytes,
            max_session_bytes=settings.session_max_bytes,
            max_ttl_seconds=settings.session_max_ttl_seconds,
            max_session_keys=settings.session_max_keys,
        )
        runtime.extras[_SESSION_STORE] = store
    assert isinstance(store, SessionStore)
    return store


def artifact_store(runtime: Runtime) -> ArtifactStore:
    """The runtime's short-lived artifact store (charts drawn without a session), same keys as sessions."""
    store = runtime.extras.get(_ARTIFACT_STORE)
    if store is None:
        store = ArtifactStore(
            runtime.redis,
            key_prefix=runtime.key(),
            encryption_keys=runtime.encryption_keys,
            ttl_seconds=runtime.settings.artifact_ttl_seconds,
        )
        runtime.extras[_ARTIFACT_STORE] = store
    assert isinstance(store, ArtifactStore)
    return store
