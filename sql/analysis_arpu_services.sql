-- ARPU per service type: revenue per customer and service first, then per service the paying customers,
-- revenue and the variance of per-customer revenue. $1 = start (incl.), $2 = end (excl.).
SELECT p.service_type AS key, count(*) AS customers, sum(p.amount) AS revenue,
       var_samp(p.amount) AS variance, sum(p.transactions) AS transactions
FROM (
    SELECT r.customer_id, r.service_type, sum(r.amount::float8) AS amount, count(*) AS transactions
    FROM revenue r
    WHERE r.transaction_date >= coalesce($1::timestamp, '-infinity')
      AND r.transaction_date < coalesce($2::timestamp, 'infinity')
    GROUP BY r.customer_id, r.service_type
) p
GROUP BY p.service_type
