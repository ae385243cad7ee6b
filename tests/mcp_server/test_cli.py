"""The command line tells what it is and what each option defaults to; the server says its version."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fastmcp import Client

from mcp_server import package_version
from mcp_server.cli import build_parser, client_config


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_server.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version_prints_the_package_version() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"analytics-mcp {package_version()}"
    assert package_version()[0].isdigit()


@pytest.mark.parametrize("command", ["serve", "seed", "apikey", "rotate-keys"])
def test_every_subcommand_describes_each_option_with_its_default(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    text = sub.format_help()
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        if action.default not in (None, False) and not action.required:
            assert f"(default: {action.default})" in " ".join(text.split()), (command, action.dest)


def test_client_configuration_names_the_client_of_each_snippet() -> None:
    text = client_config("http://127.0.0.1:8000/mcp", "amcp_k")
    for client in ("Claude Code", "Cursor", "VS Code", "Claude Desktop"):
        assert client in text
    assert '"mcpServers"' in text and '"servers"' in text


async def test_server_info_version_is_the_package_version(connect: Callable[[str], Client[Any]]) -> None:
    async with connect("viewer") as client:
        assert client.server_info is not None  # era-neutral: initialize or server/discover
        assert client.server_info.version == package_version()
