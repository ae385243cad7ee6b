-- One page of the query log, newest first (operator console and read API). Filters, each NULL for any:
-- user ($1), source ($2), outcome ($3), since ($4), until ($5); $6 rows from row $7. The text has its
-- literals shown as ?; no parameter value is ever stored.
SELECT id, logged_at, user_id, source, outcome, cached, duration_ms, row_count, query_hash, query_text
FROM mcp_internal.query_log
WHERE ($1::text IS NULL OR user_id = $1)
  AND ($2::text IS NULL OR source = $2)
  AND ($3::text IS NULL OR outcome = $3)
  AND ($4::timestamptz IS NULL OR logged_at >= $4)
  AND ($5::timestamptz IS NULL OR logged_at < $5)
ORDER BY logged_at DESC, id DESC
LIMIT $6 OFFSET $7
