"""MCP tools, one module per capability; each module's `register(app)` declares its tools and their roles."""
