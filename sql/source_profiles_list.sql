-- The stored profiles of one source ($1), in table order.
SELECT table_name, profiled_at, profile::text AS profile
FROM mcp_internal.source_profiles WHERE source = $1 ORDER BY table_name
