"""Pure statistical computation on DataFrames and arrays: no I/O, no MCP, no Redis, no asyncpg."""
