"""Run one query_database call in a fresh process and print the growth of its peak RSS, as JSON.

Used by test_memory.py: a process of its own, so the test process's earlier peaks cannot hide the
growth. Usage: python -m tests.security.memory_probe '<json: query, save_as, settings env>'.
The settings come from the environment (as the server reads them); the caller is the first API key.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any

from fastmcp import Client

from mcp_server.auth import Identity
from mcp_server.config import Settings
from mcp_server.runtime import start_runtime
from mcp_server.server import build_app


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


async def probe(query: str, save_as: bool) -> dict[str, Any]:
    settings = Settings.from_env()
    runtime = await start_runtime(settings, seed_demo=False)
    try:
        entry = settings.api_keys[0]
        app = build_app(runtime, local_identity=Identity(entry.user_id, entry.role, entry.key_id))
        async with Client(app.mcp) as client:
            arguments: dict[str, Any] = {"query": query}
            if save_as:
                created = await client.call_tool("session_create", {"data_source": "database"})
                arguments |= {"session_id": created.structured_content["session_id"], "save_as": "big"}
            # Warm up every code path (imports, codecs, the first encoding) before the baseline.
            warm = {"query": "SELECT g, repeat('w', 1000 + g) AS v FROM generate_series(1, 50) AS g"}
            if save_as:
                warm |= {"session_id": arguments["session_id"], "save_as": "warm"}
            await client.call_tool("query_database", warm)
            baseline = peak_rss_bytes()
            result = await client.call_tool("query_database", arguments, raise_on_error=False)
            growth = peak_rss_bytes() - baseline
            wire = len(result_json(result))
            return {
                "growth_bytes": growth,
                "is_error": result.is_error,
                "text": " ".join(getattr(block, "text", "")[:2000] for block in result.content),
                "answer": summary(result.structured_content),
                "wire_bytes": wire,
            }
    finally:
        await runtime.close()


def result_json(result: Any) -> str:
    """The CallToolResult as the server sends it (its content and structured content)."""
    return json.dumps(
        {
            "content": [{"type": "text", "text": getattr(block, "text", "")} for block in result.content],
            "structuredContent": result.structured_content,
            "isError": result.is_error,
        },
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )


def summary(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    rows = answer.get("rows") or []
    return {
        **{key: value for key, value in answer.items() if key != "rows"},
        "first_row_sizes": [len(str(value)) for value in (rows[0].values() if rows else [])],
        "rows_json_bytes": len(json.dumps(rows)),
    }


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(probe(request["query"], request.get("save_as", False)))))
