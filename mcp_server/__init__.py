"""The MCP edge of analytics-mcp: app factory, tools, resources, prompts, auth, HTTP routes, CLI."""
