-- When each source's profiles were last stored.
SELECT source, max(profiled_at) AS profiled_at FROM mcp_internal.source_profiles GROUP BY source
