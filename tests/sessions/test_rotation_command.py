"""`analytics-mcp rotate-keys`: the operator's way to re-encrypt sessions after adding a key, as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from mcp_server.auth import Identity
from mcp_server.runtime import Runtime, start_runtime
from sessions.store import SessionStore
from warehouse.archive import SessionArchive

ROOT = Path(__file__).resolve().parents[2]


async def rotate_keys_command(env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcp_server.cli",
        "rotate-keys",
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_rotate_keys_command_re_encrypts_sessions_so_the_old_key_can_be_dropped(
    sessions_runtime: Runtime, create_database: Callable[[], Any], tmp_path: Path
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    prefix = sessions_runtime.key("rotate-cli", uuid.uuid4().hex[:8], "")
    database_url = await create_database()
    settings = sessions_runtime.settings.with_changes(
        redis_key_prefix=prefix, database_url=database_url, session_encryption_keys=(old_key,)
    )
    caller = Identity("analyst", "analyst", "k")
    runtime = await start_runtime(settings, seed_demo=False)
    try:
        store = runtime.services.session_store
        live = (await store.create(caller, "db"))["session_id"]
        await store.update(caller, live, "note", {"kept": True})
        closed = (await store.create(caller, "db"))["session_id"]
        await store.update(caller, closed, "note", "archived")
        await store.close(caller, closed, archive=True)

        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": str(settings.redis_url),
            "REDIS_KEY_PREFIX": prefix,
            "SESSION_ENCRYPTION_KEY": f"{new_key},{old_key}",
            "ANALYTICS_MCP_HOME": str(tmp_path),
        }
        code, out, err = await rotate_keys_command(env)
        assert code == 0, err
        counts = json.loads(out.strip().splitlines()[-1])
        assert counts["sessions_rotated"] == 1 and counts["archived_sessions_rotated"] == 1
        assert counts["unreadable"] == 0

        only_new = SessionStore(
            runtime.redis, key_prefix=prefix, encryption_keys=[new_key], archive=SessionArchive(runtime.db)
        )
        assert (await only_new.read(caller, live, "note"))["value"] == {"kept": True}
        await only_new.restore(caller, closed)
        assert (await only_new.read(caller, closed, "note"))["value"] == "archived"

        # Without the old key nothing decrypts what is still under it: say so and exit non-zero.
        await store.create(caller, "db")
        code, out, err = await rotate_keys_command({**env, "SESSION_ENCRYPTION_KEY": new_key})
        assert code == 1 and json.loads(out.strip().splitlines()[-1])["unreadable"] == 1
        assert "could not be decrypted" in err and old_key not in err + out
    finally:
        await runtime.close()
