"""The MCP edge of analytics-mcp: app factory, tools, resources, prompts, auth, HTTP routes, CLI."""

import importlib.metadata


def package_version() -> str:
    """The installed package's version (serverInfo.version, --version)."""
    try:
        return importlib.metadata.version("analytics-mcp")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"
