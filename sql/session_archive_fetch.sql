SELECT session_id::text AS session_id, owner_id, archived_at, metadata, payload
FROM mcp_internal.session_archive
WHERE session_id = $1::uuid
