-- One row per paying customer in the period, for segment_compare of ARPU: segment and revenue.
-- {segment} is an allow-listed expression over customers c; $1 = as_of, $2 = start (incl.), $3 = end (excl.).
WITH settings AS (SELECT $1::timestamp AS as_of, $2::timestamp AS start_at, $3::timestamp AS end_before),
paid AS (
    SELECT r.customer_id, sum(r.amount)::float8 AS arpu
    FROM revenue r CROSS JOIN settings s
    WHERE (s.start_at IS NULL OR r.transaction_date >= s.start_at)
      AND (s.end_before IS NULL OR r.transaction_date < s.end_before)
    GROUP BY r.customer_id
)
SELECT ({segment})::text AS segment, p.arpu
FROM paid p JOIN customers c ON c.customer_id = p.customer_id CROSS JOIN settings s
