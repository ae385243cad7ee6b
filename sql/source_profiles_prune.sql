-- Forget the profiles of a source's tables that are gone ($1 source, $2 the tables it still has).
DELETE FROM mcp_internal.source_profiles WHERE source = $1 AND NOT (table_name = ANY($2::text[]))
