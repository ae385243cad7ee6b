-- The logged queries grouped by query (hash), with the filters of console_query_log ($1-$5): calls,
-- mean, p95 and max duration, failures. The caller orders and cuts the groups ($6 of each order).
WITH groups AS (
    SELECT query_hash,
           max(query_text) AS query_text,
           max(source) AS source,
           count(*) AS calls,
           avg(duration_ms) AS mean_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
           max(duration_ms) AS max_ms,
           count(*) FILTER (WHERE outcome NOT IN ('ok', 'truncated')) AS failures
    FROM mcp_internal.query_log
    WHERE ($1::text IS NULL OR user_id = $1)
      AND ($2::text IS NULL OR source = $2)
      AND ($3::text IS NULL OR outcome = $3)
      AND ($4::timestamptz IS NULL OR logged_at >= $4)
      AND ($5::timestamptz IS NULL OR logged_at < $5)
    GROUP BY query_hash
),
slowest AS (SELECT 'slowest' AS ranking, * FROM groups ORDER BY max_ms DESC, query_hash LIMIT $6),
frequent AS (SELECT 'frequent' AS ranking, * FROM groups ORDER BY calls DESC, query_hash LIMIT $6)
SELECT * FROM slowest
UNION ALL
SELECT * FROM frequent
