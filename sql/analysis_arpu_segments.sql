-- ARPU per customer segment: per-customer revenue first, then per segment the paying customers, revenue,
-- the variance of per-customer revenue (for t intervals) and the transactions counted. Amounts are summed as
-- float8: a small fixed-size aggregate state, so the per-customer hash table stays in memory (numeric's does not).
-- {segment} is an allow-listed expression over customers c; $1 = as_of, $2 = start (incl.), $3 = end (excl.).
WITH paid AS (
    SELECT r.customer_id, sum(r.amount::float8) AS amount, count(*) AS transactions
    FROM revenue r
    WHERE r.transaction_date >= coalesce($2::timestamp, '-infinity')
      AND r.transaction_date < coalesce($3::timestamp, 'infinity')
    GROUP BY r.customer_id
)
SELECT ({segment})::text AS key, count(*) AS customers, sum(p.amount) AS revenue,
       var_samp(p.amount) AS variance, sum(p.transactions) AS transactions
FROM paid p
JOIN customers c ON c.customer_id = p.customer_id
CROSS JOIN (SELECT $1::timestamp AS as_of) s
GROUP BY 1
