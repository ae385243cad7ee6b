-- A closed session, still encrypted; closing the same id again replaces the older archive.
INSERT INTO mcp_internal.session_archive (session_id, owner_id, archived_at, metadata, payload)
VALUES ($1::uuid, $2, now(), $3, $4)
ON CONFLICT (session_id) DO UPDATE
SET owner_id = EXCLUDED.owner_id,
    archived_at = EXCLUDED.archived_at,
    metadata = EXCLUDED.metadata,
    payload = EXCLUDED.payload
