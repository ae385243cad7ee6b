"""`analytics-mcp` with one extra tool, `wait_then_answer`, so a test can hold calls in flight across a SIGTERM.

Everything else is the real command (signal handling, uvicorn drain, runtime shutdown). The tool
touches a file named by its label in TEST_MARKER_DIR when it starts, so the test knows it is in flight.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from mcp_server import server as app_module
from mcp_server.auth import ANALYST

_build_app = app_module.build_app


def build_app(runtime: Any, local_identity: Any = None) -> Any:
    app = _build_app(runtime, local_identity)

    @app.tool(roles=ANALYST)
    async def wait_then_answer(seconds: float, label: str) -> dict[str, Any]:
        """Test only: sleep, then answer."""
        (Path(os.environ["TEST_MARKER_DIR"]) / label.replace("/", "_")).touch()
        await asyncio.sleep(seconds)
        return {"slept": seconds, "label": label}

    return app


app_module.build_app = build_app

if __name__ == "__main__":
    from mcp_server.cli import main

    sys.exit(main())
