"""Sessions an older version wrote before hash tags (`session:<id>`) are moved to the tagged keys at start-up."""

from __future__ import annotations

from fastmcp import Client

from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.support import call


async def test_sessions_written_in_the_untagged_layout_are_moved_and_read_as_before(
    sessions_runtime: Runtime,
) -> None:
    store = sessions_runtime.services.session_store
    redis = sessions_runtime.redis
    async with Client(app_for(sessions_runtime, "analyst").mcp) as analyst:
        session = (await call(analyst, "session_create", data_source="old layout", ttl_seconds=900))[
            "session_id"
        ]
        for key in ("a", "b"):
            await call(analyst, "session_update", session_id=session, key=key, value={"key": key})
        # put its keys back where the previous version kept them
        old_hash = sessions_runtime.key("session", session)
        old_data = sessions_runtime.key("session", session, "data", "")
        data_keys = [key async for key in redis.scan_iter(match=store.data_prefix(session) + "*")]
        assert len(data_keys) == 2
        for key in data_keys:
            await redis.rename(key, old_data + key.decode()[len(store.data_prefix(session)) :])
        await redis.rename(store.hash_key(session), old_hash)
        store._meta_cache.clear()
        assert "not found" in str(
            (
                await analyst.call_tool(
                    "session_read", {"session_id": session, "key": "a"}, raise_on_error=False
                )
            ).content
        )

        assert await store.move_untagged_sessions() == 1
        assert await store.move_untagged_sessions() == 0  # a second instance starting finds nothing to do
        assert not await redis.exists(old_hash)
        assert 800 < await redis.ttl(store.hash_key(session)) <= 900
        for key in ("a", "b"):
            assert (await call(analyst, "session_read", session_id=session, key=key))["value"] == {"key": key}
