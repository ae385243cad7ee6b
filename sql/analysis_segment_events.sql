-- One row per customer with network events in the period, for segment_compare: segment, mean quality,
-- events, total data usage. Aggregated per customer inside PostgreSQL before the join.
-- {segment} is an allow-listed expression over customers c; $1 = as_of, $2 = start (incl.), $3 = end (excl.).
WITH settings AS (SELECT $1::timestamp AS as_of, $2::timestamp AS start_at, $3::timestamp AS end_before),
activity AS (
    SELECT e.customer_id,
           avg(e.network_quality_score)::float8 AS quality,
           count(*)::float8 AS event_count,
           coalesce(sum(e.data_usage_mb), 0)::float8 AS usage
    FROM network_events e CROSS JOIN settings s
    WHERE (s.start_at IS NULL OR e.event_timestamp >= s.start_at)
      AND (s.end_before IS NULL OR e.event_timestamp < s.end_before)
    GROUP BY e.customer_id
)
SELECT ({segment})::text AS segment, a.quality, a.event_count, a.usage
FROM activity a JOIN customers c ON c.customer_id = a.customer_id CROSS JOIN settings s
