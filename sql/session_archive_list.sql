-- Archived sessions of one owner ($1), or of everyone when $1 is null; newest first.
SELECT session_id::text AS session_id, owner_id, archived_at
FROM mcp_internal.session_archive
WHERE $1::text IS NULL OR owner_id = $1::text
ORDER BY archived_at DESC
LIMIT 1000
