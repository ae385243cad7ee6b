-- Sign-ups and churns per time bucket over all history (the active base at a bucket's start needs every
-- earlier bucket); a NULL is_churned counts as not churned. $1 = grain ('day', 'week', 'month').
SELECT date_trunc($1::text, created_at) AS bucket, count(*) AS new_customers, 0::bigint AS churned
FROM customers
GROUP BY 1
UNION ALL
SELECT date_trunc($1::text, churn_date), 0::bigint, count(*)
FROM customers
WHERE is_churned
GROUP BY 1
