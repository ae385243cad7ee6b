-- Exact histogram of network quality per segment: (segment, score, events). Scores have few distinct
-- values, so this is small, and means, percentiles, ANOVA and Kruskal-Wallis ranks all follow exactly.
-- {segment} is an allow-listed expression; {join} adds customers c when the segment needs it.
-- $1 = as_of (unused here), $2 = start (incl.), $3 = end (excl.).
WITH settings AS (SELECT $1::timestamp AS as_of, $2::timestamp AS start_at, $3::timestamp AS end_before)
SELECT {segment} AS segment, e.network_quality_score AS score, count(*) AS events
FROM network_events e {join} CROSS JOIN settings s
WHERE e.network_quality_score IS NOT NULL
  AND (s.start_at IS NULL OR e.event_timestamp >= s.start_at)
  AND (s.end_before IS NULL OR e.event_timestamp < s.end_before)
GROUP BY 1, 2
