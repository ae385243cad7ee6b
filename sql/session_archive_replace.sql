-- Re-encrypted contents of one archived session (key rotation); a compare-and-set on archived_at, so an
-- archive closed again or restored meanwhile is left alone. Returns the row when it was replaced.
UPDATE mcp_internal.session_archive
SET metadata = $3, payload = $4
WHERE session_id = $1::uuid AND archived_at = $2
RETURNING session_id
