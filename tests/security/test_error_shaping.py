"""A component's failure is shaped in one place, the edge's ShapeErrors middleware: a refusal reaches the agent
as its own line with no error logged; a fault as a generic line with a request id, logged once with its frames."""

from __future__ import annotations

import secrets

from fastmcp import Client

from core.errors import InvalidInput
from mcp_server.auth import ANALYST
from tests.conftest import app_for
from tests.security.test_clean_errors import json_lines, read_error
from tests.support import refusal


async def test_a_fault_gets_a_request_id_and_one_log_line_and_a_refusal_none(runtime, captured_logs):
    app = app_for(runtime, "analyst")
    marker = f"mk{secrets.token_hex(5)}"

    @app.tool(roles=ANALYST)
    def explode() -> str:
        raise ValueError(marker)

    @app.tool(roles=ANALYST)
    async def refuse() -> str:
        raise InvalidInput("nothing to do here; call summary_snapshot instead")

    @app.resource("faulty://{name}", roles=ANALYST)
    def faulty(name: str) -> str:
        raise ValueError(marker)

    async with Client(app.mcp) as client:
        tool_fault = await refusal(client, "explode")
        refused = await refusal(client, "refuse")
        resource_fault = await read_error(client, "faulty://x")
    assert refused == "nothing to do here; call summary_snapshot instead"
    assert tool_fault.startswith("internal error while serving tool 'explode'; request id ")
    assert (
        resource_fault is not None
        and "internal error while serving resource 'faulty://{name}'" in resource_fault
    )
    assert marker not in tool_fault + resource_fault
    request_ids = [tool_fault.rsplit(" ", 1)[-1], resource_fault.rsplit(" ", 1)[-1]]
    lines = json_lines(captured_logs.getvalue())
    logged = [line for line in lines if "exc" in line]
    assert [line["request_id"] for line in logged] == request_ids  # each fault once, nothing for the refusal
    assert all("builtins.ValueError (message withheld)" in line["exc"] for line in logged)
    assert marker not in captured_logs.getvalue()
    assert [line for line in lines if line["level"] == "error"] == logged
