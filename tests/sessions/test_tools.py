"""The session tools through real MCP clients, on real Redis and PostgreSQL: what the issue asks to see."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from cryptography.fernet import Fernet
from fastmcp import Client

from core.errors import InvalidInput, Unavailable
from mcp_server.auth import Identity
from mcp_server.runtime import Runtime, start_runtime
from sessions.rotation import rotate_keys
from sessions.store import SessionStore
from tests.conftest import app_for
from tests.support import call, refusal
from warehouse.archive import SessionArchive

Users = Callable[[str], Client]


async def session_keys(runtime: Runtime, session: str) -> list[bytes]:
    """Every Redis key of one session (its hash and its values)."""
    tag = runtime.services.session_store.data_prefix(session).removesuffix(":data:")
    keys = [key async for key in runtime.redis.scan_iter(match=tag + "*")]
    return sorted(keys)


async def everything_in_redis(runtime: Runtime) -> list[tuple[bytes, bytes]]:
    """(key, raw bytes) for every string, hash field and value, and set member under the test prefix."""
    found: list[tuple[bytes, bytes]] = []
    async for key in runtime.redis.scan_iter(match=runtime.key() + "*", count=1000):
        kind = (await runtime.redis.type(key)).decode()
        found.append((key, key))
        if kind == "string":
            found.append((key, await runtime.redis.get(key) or b""))
        elif kind == "hash":
            for field, value in (await runtime.redis.hgetall(key)).items():
                found += [(key, field), (key, value)]
        elif kind == "set":
            found += [(key, member) for member in await runtime.redis.smembers(key)]
        elif kind in ("zset", "list", "stream"):
            found.append((key, await runtime.redis.dump(key) or b""))
    return found


async def key_ttls(runtime: Runtime, session: str) -> list[int]:
    return [await runtime.redis.ttl(key) for key in await session_keys(runtime, session)]


def same_but_id(one: str, other: str, one_id: str, other_id: str) -> bool:
    return one.replace(one_id, "<id>") == other.replace(other_id, "<id>")


async def test_session_lifecycle_create_update_read_list_extend_close(as_user: Users) -> None:
    async with as_user("analyst") as analyst:
        created = await call(analyst, "session_create", data_source="database", ttl_seconds=600)
        session = created["session_id"]
        assert uuid.UUID(session).version == 4
        assert created["status"] == "active"
        assert created["created_at"] < created["expires_at"]

        stored = await call(
            analyst, "session_update", session_id=session, key="notes", value={"a": [1, 2, 3]}
        )
        assert stored["status"] == "stored" and stored["size_bytes"] > 0
        await call(analyst, "session_update", session_id=session, key="count", value=42)
        assert (await call(analyst, "session_read", session_id=session, key="notes"))["value"] == {
            "a": [1, 2, 3]
        }
        assert (await call(analyst, "session_read", session_id=session, key="count"))["value"] == 42
        await call(analyst, "session_update", session_id=session, key="count", value=43)
        assert (await call(analyst, "session_read", session_id=session, key="count"))["value"] == 43

        listed = await call(analyst, "session_list")
        mine = next(s for s in listed["sessions"] if s["session_id"] == session)
        assert mine["data_source"] == "database"
        assert [k["key"] for k in mine["keys"]] == ["count", "notes"]
        assert mine["size_bytes"] == sum(k["size_bytes"] for k in mine["keys"])
        assert mine["ttl_seconds"] == 600

        extended = await call(analyst, "session_extend", session_id=session, ttl_seconds=7200)
        assert extended["ttl_seconds"] == 7200
        listed = await call(analyst, "session_list")
        assert next(s for s in listed["sessions"] if s["session_id"] == session)["ttl_seconds"] == 7200

        closed = await call(analyst, "session_close", session_id=session, archive=False)
        assert closed == {"session_id": session, "status": "closed", "archived": False}
        gone = await refusal(analyst, "session_read", session_id=session, key="notes")
        assert gone.startswith(f"session '{session}' not found")
        for tool in ("session_close", "session_extend", "session_update"):
            extra = {"ttl_seconds": 60} if tool == "session_extend" else {"key": "k", "value": 1}
            extra = {} if tool == "session_close" else extra
            assert "not found" in await refusal(analyst, tool, session_id=session, **extra)
        assert session not in [s["session_id"] for s in (await call(analyst, "session_list"))["sessions"]]


async def test_another_analyst_and_an_ungranted_viewer_cannot_read_write_or_learn_the_session_exists(
    as_user: Users,
) -> None:
    async with as_user("analyst") as owner:
        session = (await call(owner, "session_create", data_source="database", user_id="viewer"))[
            "session_id"
        ]
        await call(owner, "session_update", session_id=session, key="secret", value="owner only")
    absent = str(uuid.uuid4())
    async with as_user("analyst2") as other:
        for tool, arguments in (
            ("session_read", {"key": "secret"}),
            ("session_update", {"key": "secret", "value": "overwritten"}),
            ("session_update", {"key": "new", "value": 1}),
            ("session_extend", {"ttl_seconds": 60}),
            ("session_close", {"archive": False}),
            ("session_close", {"archive": True}),
        ):
            hidden = await refusal(other, tool, session_id=session, **arguments)
            missing = await refusal(other, tool, session_id=absent, **arguments)
            assert same_but_id(hidden, missing, session, absent), (hidden, missing)
            assert "not found" in hidden
        assert session not in [s["session_id"] for s in (await call(other, "session_list"))["sessions"]]
    async with as_user("viewer2") as stranger:
        hidden = await refusal(stranger, "session_read", session_id=session, key="secret")
        missing = await refusal(stranger, "session_read", session_id=absent, key="secret")
        assert same_but_id(hidden, missing, session, absent)
        assert session not in [s["session_id"] for s in (await call(stranger, "session_list"))["sessions"]]
        refused = await refusal(stranger, "session_update", session_id=session, key="secret", value="x")
        assert "needs role" in refused
    async with as_user("analyst") as owner:
        assert (await call(owner, "session_read", session_id=session, key="secret"))["value"] == "owner only"
        listed = (await call(owner, "session_list"))["sessions"]
        assert [k["key"] for k in next(s for s in listed if s["session_id"] == session)["keys"]] == ["secret"]


async def test_a_granted_viewer_reads_but_cannot_write_even_with_a_write_grant(as_user: Users) -> None:
    async with as_user("analyst") as owner:
        session = (
            await call(
                owner, "session_create", data_source="database", access_level="write", user_id="viewer"
            )
        )["session_id"]
        await call(owner, "session_update", session_id=session, key="shared", value={"n": 1})
    async with as_user("viewer") as viewer:
        assert (await call(viewer, "session_read", session_id=session, key="shared"))["value"] == {"n": 1}
        listed = await call(viewer, "session_list")
        entry = next(s for s in listed["sessions"] if s["session_id"] == session)
        assert entry["owner_id"] == "analyst" and entry["granted_to"]["user_id"] == "viewer"
        for tool, arguments in (
            ("session_update", {"key": "shared", "value": {"n": 2}}),
            ("session_close", {}),
            ("session_extend", {"ttl_seconds": 60}),
            ("session_delete", {}),
        ):
            assert "needs role" in await refusal(viewer, tool, session_id=session, **arguments)
        assert "needs role" in await refusal(viewer, "session_create", data_source="database")
    async with as_user("analyst") as owner:
        assert (await call(owner, "session_read", session_id=session, key="shared"))["value"] == {"n": 1}


async def test_an_analyst_granted_read_cannot_write_and_one_granted_write_can(as_user: Users) -> None:
    async with as_user("analyst") as owner:
        read_only = (await call(owner, "session_create", data_source="db", user_id="analyst2"))["session_id"]
        writable = (
            await call(owner, "session_create", data_source="db", user_id="analyst2", access_level="write")
        )["session_id"]
    async with as_user("analyst2") as grantee:
        refused = await refusal(grantee, "session_update", session_id=read_only, key="k", value=1)
        assert "read-only for you" in refused
        await call(grantee, "session_update", session_id=writable, key="k", value=2)
        assert "only the owner" in await refusal(grantee, "session_close", session_id=writable)
    async with as_user("analyst") as owner:
        assert (await call(owner, "session_read", session_id=writable, key="k"))["value"] == 2


async def test_no_plaintext_of_a_marker_anywhere_in_redis(sessions_runtime: Runtime, as_user: Users) -> None:
    marker = f"MARKER{secrets.token_hex(6)}"
    async with as_user("analyst") as analyst:
        session = (await call(analyst, "session_create", data_source=f"source {marker}", user_id="analyst2"))[
            "session_id"
        ]
        await call(analyst, "session_update", session_id=session, key=f"key-{marker}", value={"text": marker})
        await call(analyst, "session_update", session_id=session, key="plain", value=[marker] * 200)
    frame = pd.DataFrame({"label": [marker] * 50, "n": range(50)})
    caller = Identity("analyst", "analyst", "k")
    await sessions_runtime.services.session_store.save_dataset(
        caller, session, "frame", frame, {"sql": marker}
    )
    # the values are really there (so the check below is not vacuous)
    assert (await sessions_runtime.services.session_store.load_dataset(caller, session, "frame"))["label"][
        0
    ] == marker

    raw = await everything_in_redis(sessions_runtime)
    assert any(session.encode() in key for key, _ in raw)
    needles = [marker.encode(), marker.lower().encode()]
    leaks = [(key, data[:80]) for key, data in raw for needle in needles if needle in data]
    assert leaks == []


async def test_every_key_of_a_session_and_its_index_sets_carry_the_session_ttl(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    async with as_user("analyst") as analyst:
        session = (
            await call(analyst, "session_create", data_source="db", ttl_seconds=900, user_id="viewer2")
        )["session_id"]
        for key in ("a", "b", "c"):
            await call(analyst, "session_update", session_id=session, key=key, value=key * 10)
        await call(analyst, "session_extend", session_id=session, ttl_seconds=5000)
        await call(analyst, "session_update", session_id=session, key="d", value="last")
    redis = sessions_runtime.redis
    keys = await session_keys(sessions_runtime, session)
    assert len(keys) == 5  # the hash and four values
    ttls = [await redis.ttl(key) for key in keys]
    assert all(4990 <= ttl <= 5000 for ttl in ttls), ttls
    for user in ("analyst", "viewer2"):
        assert await redis.ttl(sessions_runtime.key("session", "index", user)) >= 4990


async def test_reading_touches_last_accessed_and_pushes_expiry(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    async with as_user("analyst") as analyst:
        session = (await call(analyst, "session_create", data_source="db", ttl_seconds=300))["session_id"]
        await call(analyst, "session_update", session_id=session, key="k", value=1)
        hash_key = sessions_runtime.services.session_store.hash_key(session)
        before = float(await sessions_runtime.redis.hget(hash_key, "accessed"))
        await sessions_runtime.redis.expire(hash_key, 100)  # pretend time has passed
        await call(analyst, "session_read", session_id=session, key="k")
        after = float(await sessions_runtime.redis.hget(hash_key, "accessed"))
        assert after > before
        assert await sessions_runtime.redis.ttl(hash_key) > 100


async def test_an_expired_session_leaves_no_keys_and_leaves_the_index(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    async with as_user("analyst") as analyst:
        session = (await call(analyst, "session_create", data_source="db", ttl_seconds=1))["session_id"]
        await call(analyst, "session_update", session_id=session, key="soon", value="gone")
        index = sessions_runtime.key("session", "index", "analyst")
        assert await sessions_runtime.redis.sismember(index, session)
        assert len(await session_keys(sessions_runtime, session)) == 2
        deadline = time.monotonic() + 10
        while await session_keys(sessions_runtime, session) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        assert await session_keys(sessions_runtime, session) == []
        assert "not found" in await refusal(analyst, "session_read", session_id=session, key="soon")
        assert session not in [s["session_id"] for s in (await call(analyst, "session_list"))["sessions"]]
        assert not await sessions_runtime.redis.sismember(index, session)


async def test_close_with_archive_then_restore_gives_back_the_same_data(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    marker = f"ARCHIVED{secrets.token_hex(4)}"
    caller = Identity("analyst", "analyst", "k")
    frame = pd.DataFrame({"n": range(30), "label": [f"{marker}{i}" for i in range(30)]})
    async with as_user("analyst") as analyst:
        session = (await call(analyst, "session_create", data_source="database", user_id="viewer"))[
            "session_id"
        ]
        await call(analyst, "session_update", session_id=session, key="note", value={"marker": marker})
        await sessions_runtime.services.session_store.save_dataset(
            caller, session, "rows", frame, {"sql": "SELECT n"}
        )
        before = await call(analyst, "session_read", session_id=session, key="rows", limit=30)

        closed = await call(analyst, "session_close", session_id=session)
        assert closed["archived"] is True and closed["keys"] == 2
        assert await session_keys(sessions_runtime, session) == []
        async with sessions_runtime.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT owner_id, metadata, payload FROM mcp_internal.session_archive WHERE session_id = $1",
                uuid.UUID(session),
            )
        assert row["owner_id"] == "analyst"
        assert marker.encode() not in bytes(row["payload"]) + bytes(row["metadata"])
        assert b"database" not in bytes(row["metadata"])  # the data source stays encrypted too

        archived = await call(analyst, "session_list", archived=True)
        assert session in [a["session_id"] for a in archived["archived"]]
        async with as_user("analyst2") as other:
            refused = await refusal(other, "session_restore", session_id=session)
            assert "not found" in refused
            assert session not in [
                a["session_id"] for a in (await call(other, "session_list", archived=True))["archived"]
            ]

        restored = await call(analyst, "session_restore", session_id=session)
        assert restored["status"] == "active" and restored["keys"] == 2
        assert (await call(analyst, "session_read", session_id=session, key="note"))["value"] == {
            "marker": marker
        }
        after = await call(analyst, "session_read", session_id=session, key="rows", limit=30)
        assert after["value"]["preview"] == before["value"]["preview"]
        assert after["value"]["columns"] == before["value"]["columns"]
        pd.testing.assert_frame_equal(
            await sessions_runtime.services.session_store.load_dataset(caller, session, "rows"), frame
        )
        assert min(await key_ttls(sessions_runtime, session)) > 0
        async with as_user("viewer") as viewer:  # the grant came back too
            assert (await call(viewer, "session_read", session_id=session, key="note"))["value"][
                "marker"
            ] == marker
        assert "active already" in await refusal(analyst, "session_restore", session_id=session)
        assert session not in [
            a["session_id"] for a in (await call(analyst, "session_list", archived=True))["archived"]
        ]


async def test_an_archive_failure_leaves_the_live_session_untouched(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    async with as_user("analyst") as analyst:
        session = (await call(analyst, "session_create", data_source="db"))["session_id"]
        await call(analyst, "session_update", session_id=session, key="keep", value="me")
        keys_before = await session_keys(sessions_runtime, session)
        async with sessions_runtime.db.connection() as conn:
            await conn.execute("ALTER TABLE mcp_internal.session_archive RENAME TO session_archive_away")
        try:
            refused = await refusal(analyst, "session_close", session_id=session)
            assert "internal error" in refused or "not answering" in refused
        finally:
            async with sessions_runtime.db.connection() as conn:
                await conn.execute("ALTER TABLE mcp_internal.session_archive_away RENAME TO session_archive")
        assert await session_keys(sessions_runtime, session) == keys_before
        assert (
            await sessions_runtime.redis.hget(
                sessions_runtime.services.session_store.hash_key(session), "status"
            )
            == b"active"
        )
        assert (await call(analyst, "session_read", session_id=session, key="keep"))["value"] == "me"
        await call(analyst, "session_update", session_id=session, key="keep", value="still writable")
        assert (await call(analyst, "session_close", session_id=session))["archived"] is True


async def test_admin_deletes_any_session_and_analysts_cannot(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    async with as_user("analyst") as analyst:
        session = (await call(analyst, "session_create", data_source="db"))["session_id"]
        await call(analyst, "session_update", session_id=session, key="k", value=1)
        assert "needs role admin" in await refusal(analyst, "session_delete", session_id=session)
    async with as_user("admin") as admin:
        assert (await call(admin, "session_read", session_id=session, key="k"))["value"] == 1
        everyone = await call(admin, "session_list", all_users=True)
        assert session in [s["session_id"] for s in everyone["sessions"]]
        deleted = await call(admin, "session_delete", session_id=session)
        assert deleted["live_deleted"] is True
        assert "not found" in await refusal(admin, "session_delete", session_id=session)
    assert await session_keys(sessions_runtime, session) == []
    async with as_user("analyst") as analyst:
        assert "needs role admin" in await refusal(analyst, "session_list", all_users=True)


async def test_rotation_re_encrypts_live_and_archived_sessions_and_keeps_old_ones_readable(
    sessions_runtime: Runtime, create_database: Callable[[], Any]
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    prefix = sessions_runtime.key("rotation", uuid.uuid4().hex[:8], "")  # apart from other tests' sessions
    # A database of its own: the archive must hold only this test's sessions.
    settings = sessions_runtime.settings.with_changes(
        redis_key_prefix=prefix, database_url=await create_database()
    )
    before = await start_runtime(settings.with_changes(session_encryption_keys=(old_key,)), seed_demo=False)
    after = await start_runtime(
        settings.with_changes(session_encryption_keys=(new_key, old_key)), seed_demo=False
    )
    try:
        async with Client(app_for(before, "analyst").mcp) as analyst:
            session = (await call(analyst, "session_create", data_source="db", user_id="viewer"))[
                "session_id"
            ]
            await call(analyst, "session_update", session_id=session, key="v", value={"x": 1})
            closed = (await call(analyst, "session_create", data_source="db"))["session_id"]
            await call(analyst, "session_update", session_id=closed, key="kept", value=[1, 2, 3])
            assert (await call(analyst, "session_close", session_id=closed))["archived"] is True
        caller = Identity("analyst", "analyst", "k")
        await before.services.session_store.save_dataset(
            caller, session, "d", pd.DataFrame({"y": [1, 2]}), {}
        )

        async with Client(app_for(after, "analyst").mcp) as analyst:  # both keys: old data reads
            assert (await call(analyst, "session_read", session_id=session, key="v"))["value"] == {"x": 1}
        async with Client(app_for(after, "admin").mcp) as admin:
            rotated = await call(admin, "session_rotate_keys")
            assert rotated == {
                "sessions_rotated": 1,
                "items_reencrypted": 5,  # meta, 2 key entries, 2 values
                "archived_sessions_rotated": 1,
                "archived_items_reencrypted": 3,  # meta, 1 key entry, 1 value
                "unreadable": 0,
            }
            again = await call(admin, "session_rotate_keys")
            assert again["sessions_rotated"] == again["archived_sessions_rotated"] == 0
        archive = SessionArchive(after.db)
        only_new = SessionStore(after.redis, key_prefix=prefix, encryption_keys=[new_key], archive=archive)
        assert (await only_new.read(caller, session, "v"))["value"] == {"x": 1}
        assert (await only_new.load_dataset(caller, session, "d"))["y"].tolist() == [1, 2]
        only_old = SessionStore(after.redis, key_prefix=prefix, encryption_keys=[old_key], archive=archive)
        with pytest.raises(Unavailable, match="cannot be decrypted"):
            await only_old.read(caller, session, "v")
        assert (await only_new.restore(caller, closed))["restored"] is True  # the old key is gone
        assert (await only_new.read(caller, closed, "kept"))["value"] == [1, 2, 3]
        assert min(await key_ttls(after, session)) > 0
        # A session no configured key opens is counted, not fatal: the others still rotate.
        stranger = SessionStore(
            after.redis, key_prefix=prefix, encryption_keys=[Fernet.generate_key().decode()]
        )
        await stranger.create(caller, "db")
        third = (await before.services.session_store.create(caller, "db"))["session_id"]  # under old_key
        counts = await rotate_keys(after.services.session_store)
        assert counts["unreadable"] == 1 and counts["sessions_rotated"] == 1
        assert (await only_new.describe(caller, third))["session_id"] == third
    finally:
        await before.close()
        await after.close()


async def test_100_concurrent_updates_to_one_session_lose_nothing(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    async with as_user("analyst") as owner:
        session = (
            await call(owner, "session_create", data_source="db", user_id="analyst2", access_level="write")
        )["session_id"]
    async with as_user("analyst") as first, as_user("analyst2") as second, as_user("admin") as third:
        clients = [first, second, third]
        await asyncio.gather(
            *(
                call(
                    clients[i % 3],
                    "session_update",
                    session_id=session,
                    key=f"k{i}",
                    value={"i": i, "pad": "x" * i},
                )
                for i in range(100)
            )
        )
        await asyncio.gather(
            *(
                call(clients[i % 3], "session_update", session_id=session, key="same", value=i)
                for i in range(100)
            )
        )
        listed = await call(first, "session_list")
    entry = next(s for s in listed["sessions"] if s["session_id"] == session)
    assert sorted(k["key"] for k in entry["keys"]) == sorted([f"k{i}" for i in range(100)] + ["same"])
    store = sessions_runtime.services.session_store
    caller = Identity("analyst", "analyst", "k")
    for i in range(100):
        assert (await store.read(caller, session, f"k{i}"))["value"] == {"i": i, "pad": "x" * i}
    assert (await store.read(caller, session, "same"))["value"] in range(100)
    # the size accounting saw every write exactly once
    data_keys = [k for k in await session_keys(sessions_runtime, session) if b":data:" in k]
    assert len(data_keys) == 101
    lengths = [await sessions_runtime.redis.strlen(k) for k in data_keys]
    hash_key = sessions_runtime.services.session_store.hash_key(session)
    assert int(await sessions_runtime.redis.hget(hash_key, "bytes")) == sum(lengths)
    assert entry["size_bytes"] == sum(k["size_bytes"] for k in entry["keys"])


async def test_malformed_ids_keys_and_arguments_get_one_line_errors_and_change_nothing(
    sessions_runtime: Runtime, as_user: Users
) -> None:
    async with as_user("analyst") as analyst:
        session = (await call(analyst, "session_create", data_source="db"))["session_id"]
        keys_before = await session_keys(sessions_runtime, session)
        for bad in ("nope", "1234", "*", session[:-1], session + "0", "' OR 1=1 --", "x" * 500):
            message = await refusal(analyst, "session_read", session_id=bad, key="k")
            assert "is not a session id" in message and len(message) < 300
        for bad in ("*", "a b", "x" * 65, "", "a:b", "[ab]", "é", "a\nb", "?"):
            message = await refusal(analyst, "session_update", session_id=session, key=bad, value=1)
            assert "is not a valid key name" in message and len(message) < 300
            assert "is not a valid key name" in await refusal(
                analyst, "session_read", session_id=session, key=bad
            )
        assert "ttl_seconds" in await refusal(analyst, "session_create", data_source="db", ttl_seconds=10**9)
        assert "ttl_seconds" in await refusal(analyst, "session_create", data_source="db", ttl_seconds=0)
        assert "access_level" in await refusal(
            analyst, "session_create", data_source="db", access_level="admin"
        )
        assert "user_id" in await refusal(analyst, "session_create", data_source="db", user_id="a b*")
        assert "data_source" in await refusal(analyst, "session_create", data_source="")
        assert "not a session id" in await refusal(analyst, "session_restore", session_id="nope")
        assert await session_keys(sessions_runtime, session) == keys_before


async def test_size_limits_per_value_and_per_session_have_clear_errors(sessions_runtime: Runtime) -> None:
    store = SessionStore(
        sessions_runtime.redis,
        key_prefix=sessions_runtime.key("limits", ""),
        encryption_keys=sessions_runtime.encryption_keys,
        max_value_bytes=4_000,
        max_session_bytes=10_000,
    )
    caller = Identity("analyst", "analyst", "k")
    session = (await store.create(caller, "db"))["session_id"]
    noise = [secrets.token_hex(8) for _ in range(400)]  # about 7 KB of JSON that compresses poorly
    with pytest.raises(InvalidInput, match=r"the limit is 4,000 per value \(SESSION_MAX_VALUE_BYTES\)"):
        await store.update(caller, session, "big", noise)
    stored = []
    with pytest.raises(InvalidInput, match=r"above its limit of 10,000 \(SESSION_MAX_BYTES\)"):
        for i in range(20):
            stored.append(
                (await store.update(caller, session, f"part{i}", noise[(i % 4) * 100 : (i % 4) * 100 + 100]))[
                    "size_bytes"
                ]
            )
    assert len(stored) >= 3 and sum(stored) <= 10_000
    described = await store.describe(caller, session)
    assert described["size_bytes"] == sum(stored)
    assert len(described["keys"]) == len(stored)  # the refused value left nothing behind
    await store.update(caller, session, "part0", "small")  # overwriting a key frees its room
    await store.update(caller, session, f"part{len(stored)}", noise[:100])
    assert len((await store.describe(caller, session))["keys"]) == len(stored) + 1


async def test_a_session_created_through_one_server_instance_is_used_through_another(
    sessions_runtime: Runtime,
) -> None:
    second = await start_runtime(sessions_runtime.settings, seed_demo=False)  # same Redis, same database
    try:
        assert second.redis is not sessions_runtime.redis
        async with (
            Client(app_for(sessions_runtime, "analyst").mcp) as one,
            Client(app_for(second, "analyst").mcp) as other,
        ):
            session = (await call(one, "session_create", data_source="db"))["session_id"]
            await call(one, "session_update", session_id=session, key="from_one", value=1)
            assert (await call(other, "session_read", session_id=session, key="from_one"))["value"] == 1
            await call(other, "session_update", session_id=session, key="from_other", value=2)
            assert (await call(one, "session_read", session_id=session, key="from_other"))["value"] == 2
            assert session in [s["session_id"] for s in (await call(other, "session_list"))["sessions"]]
            await call(other, "session_close", session_id=session)
            await call(one, "session_restore", session_id=session)
            assert (await call(other, "session_read", session_id=session, key="from_one"))["value"] == 1
    finally:
        await second.close()
