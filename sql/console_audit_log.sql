-- One page of the audit trail, newest first (operator console and read API). Filters, each NULL for
-- any: user ($1), event ($2), outcome ($3), since ($4), until ($5); $6 rows from row $7.
SELECT id, logged_at, event, user_id, key_id, tool, session_id, duration_ms, outcome
FROM mcp_internal.audit_log
WHERE ($1::text IS NULL OR user_id = $1)
  AND ($2::text IS NULL OR event = $2)
  AND ($3::text IS NULL OR outcome = $3)
  AND ($4::timestamptz IS NULL OR logged_at >= $4)
  AND ($5::timestamptz IS NULL OR logged_at < $5)
ORDER BY logged_at DESC, id DESC
LIMIT $6 OFFSET $7
