-- One row per customer for segment_compare of customer attributes: segment, age, tenure in days, churned
-- (a NULL is_churned counts as not churned). {segment} is an allow-listed expression over customers c;
-- $1 = as_of (tenure of active customers), $2 = sign-up start (incl.), $3 = sign-up end (excl.).
WITH settings AS (SELECT $1::timestamp AS as_of, $2::timestamp AS start_at, $3::timestamp AS end_before)
SELECT ({segment})::text AS segment,
       c.age::float8 AS age,
       extract(epoch FROM (coalesce(c.churn_date, s.as_of) - c.created_at))::float8 / 86400.0 AS tenure_days,
       coalesce(c.is_churned, FALSE)::int::float8 AS churn
FROM customers c CROSS JOIN settings s
WHERE (s.start_at IS NULL OR c.created_at >= s.start_at)
  AND (s.end_before IS NULL OR c.created_at < s.end_before)
