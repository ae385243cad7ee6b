-- One row per query_database call: who, which query (hash, and its text with literals shown as ?), how
-- long, how many rows, outcome. Parameter values are never stored.
INSERT INTO mcp_internal.query_log
    (user_id, query_hash, duration_ms, row_count, outcome, cached, source, query_text)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
