"""The foundation through the MCP protocol: tools listed per role, the snapshot, data generation, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mcp_server.config import ConfigError, Settings
from tests.support import call, refusal

CLI = [sys.executable, "-m", "mcp_server.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "API_KEYS"}}
    full_env.update(env or {})
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full_env, timeout=120, stdin=subprocess.DEVNULL
    )


async def test_an_analyst_sees_the_tools_and_the_snapshot_matches_plain_sql(connect, runtime):
    async with connect("analyst") as client:
        names = {tool.name for tool in await client.list_tools()}
        assert "summary_snapshot" in names
        assert "generate_data" not in names  # admin only: not even listed
        snapshot = await call(client, "summary_snapshot")
    async with runtime.db.connection() as conn:
        customers = await conn.fetchval("SELECT count(*) FROM customers")
        churned = await conn.fetchval("SELECT count(*) FROM customers WHERE is_churned")
        events = await conn.fetchval("SELECT count(*) FROM network_events")
        total = await conn.fetchval("SELECT sum(amount) FROM revenue")
    tables = snapshot["tables"]
    assert tables["customers"]["rows"] == customers
    assert tables["customers"]["churn_rate"] == pytest.approx(churned / customers, rel=1e-12)
    assert tables["network_events"]["rows"] == events
    assert tables["revenue"]["total"] == pytest.approx(float(total), rel=1e-12)


async def test_a_viewer_may_not_take_the_snapshot(connect):
    async with connect("viewer") as client:
        message = await refusal(client, "summary_snapshot")
    assert "analyst" in message and "viewer" in message


async def test_only_an_admin_may_regenerate_data(connect):
    async with connect("analyst") as client:
        assert "admin" in await refusal(client, "generate_data", customers=10, seed=1)


async def test_generate_data_replaces_the_data_deterministically(make_runtime):
    from fastmcp import Client

    from tests.conftest import app_for

    async with make_runtime(customers=100, seed=1) as rt:
        async with Client(app_for(rt, "admin").mcp) as client:
            first = await call(client, "generate_data", customers=250, seed=9)
            second = await call(client, "generate_data", customers=250, seed=9)
            bad = await refusal(
                client, "generate_data", customers=250, seed=9, start_date="2025-01-01", end_date="2024-01-01"
            )
            garbled = await refusal(client, "generate_data", customers=5, start_date="yesterday")
            zero = await refusal(client, "generate_data", customers=0)
        assert first["customers"] == second["customers"] == 250
        assert first["network_events"] == second["network_events"]
        assert second["data_version"] == first["data_version"] + 1
        assert await rt.db.row_count("customers") == 250
        assert "after start-date" in bad
        assert "YYYY-MM-DD" in garbled
        assert "customers" in zero


@pytest.mark.parametrize(
    "args, expected",
    [
        (["seed", "--customers", "0", "--seed", "1"], "at least 1"),
        (["seed", "--customers", "-5", "--seed", "1"], "at least 1"),
        (["seed", "--customers", "ten", "--seed", "1"], "not a whole number"),
        (
            [
                "seed",
                "--customers",
                "10",
                "--seed",
                "1",
                "--start-date",
                "2025-01-01",
                "--end-date",
                "2024-01-01",
            ],
            "after start-date",
        ),
        (["seed", "--customers", "10", "--seed", "1", "--start-date", "01/02/2024"], "YYYY-MM-DD"),
        (["apikey", "--user", "x", "--role", "root"], "invalid choice"),
    ],
)
def test_bad_cli_arguments_exit_2_with_one_clear_line(args, expected):
    result = run_cli(*args, env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(expected in line for line in lines), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"API_KEYS": "alice:analyst"}, "API_KEYS entry 1"),
        ({"API_KEYS": "alice:analyst:" + "a" * 64 + ",bob:superuser:" + "b" * 64}, "API_KEYS entry 2 (bob)"),
        ({"SESSION_ENCRYPTION_KEY": "not-a-fernet-key"}, "SESSION_ENCRYPTION_KEY entry 1"),
        ({"DB_POOL_MAX_SIZE": "lots"}, "DB_POOL_MAX_SIZE"),
    ],
)
def test_malformed_settings_stop_the_server_with_exit_2(env, expected):
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_never_echo_a_key_digest_in_their_errors():
    digest = "c" * 63 + "z"
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"API_KEYS": f"carol:viewer:{digest}"})
    assert digest not in str(error.value)


def test_apikey_prints_a_key_and_a_matching_entry():
    result = run_cli("apikey", "--user", "dana", "--role", "analyst")
    assert result.returncode == 0
    key = result.stdout.split("key:")[1].split()[0]
    entry = result.stdout.split("API_KEYS:")[1].split()[0]
    settings = Settings.from_env({"API_KEYS": entry})
    from mcp_server.auth import KeyRegistry

    identity = KeyRegistry(settings.api_keys).resolve(key)
    assert identity is not None and identity.user_id == "dana" and identity.role == "analyst"


async def test_seed_command_loads_and_reloads_without_duplicates(create_database):
    import asyncio

    import asyncpg

    url = await create_database()
    env = {"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    for _ in range(2):
        # No Redis is needed to seed (this one is unreachable); the database is all it touches.
        result = await asyncio.to_thread(
            run_cli, "seed", "--customers", "120", "--seed", "4", "--no-progress", env=env
        )
        assert result.returncode == 0, result.stderr
        assert "loaded 120 customers" in result.stdout
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM customers") == 120
    finally:
        await conn.close()
