-- Store one table's profile ($1 source, $2 table, $3 the profile as JSON text).
INSERT INTO mcp_internal.source_profiles (source, table_name, profiled_at, profile)
VALUES ($1, $2, now(), $3::jsonb)
ON CONFLICT (source, table_name) DO UPDATE SET profiled_at = now(), profile = EXCLUDED.profile
