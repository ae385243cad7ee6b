-- Network events per time bucket (trend and anomalies): events, mean quality over scored events, total
-- data usage. $1 = grain for date_trunc ('hour', 'day', 'week', 'month'), $2 = start (incl.), $3 = end (excl.).
WITH settings AS (SELECT $1::text AS grain, $2::timestamp AS start_at, $3::timestamp AS end_before)
SELECT date_trunc(s.grain, e.event_timestamp) AS bucket,
       count(*) AS events,
       count(e.network_quality_score) AS scored_events,
       avg(e.network_quality_score) AS mean_quality,
       coalesce(sum(e.data_usage_mb), 0) AS usage_mb
FROM network_events e CROSS JOIN settings s
WHERE (s.start_at IS NULL OR e.event_timestamp >= s.start_at)
  AND (s.end_before IS NULL OR e.event_timestamp < s.end_before)
GROUP BY 1
ORDER BY 1
