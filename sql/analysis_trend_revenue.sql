-- Revenue per time bucket for the ARPU trend: revenue, distinct paying customers, transactions.
-- $1 = grain for date_trunc ('day', 'week', 'month'), $2 = start (incl.), $3 = end (excl.).
WITH settings AS (SELECT $1::text AS grain, $2::timestamp AS start_at, $3::timestamp AS end_before)
SELECT date_trunc(s.grain, r.transaction_date) AS bucket,
       sum(r.amount) AS revenue,
       count(DISTINCT r.customer_id) AS customers,
       count(*) AS transactions
FROM revenue r CROSS JOIN settings s
WHERE (s.start_at IS NULL OR r.transaction_date >= s.start_at)
  AND (s.end_before IS NULL OR r.transaction_date < s.end_before)
GROUP BY 1
ORDER BY 1
