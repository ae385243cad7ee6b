-- ARPU per calendar month: revenue per customer and month first, then per month the paying customers,
-- revenue and the variance of per-customer revenue. $1 = start (incl.), $2 = end (excl.).
SELECT to_char(p.month, 'YYYY-MM') AS key, count(*) AS customers, sum(p.amount) AS revenue,
       var_samp(p.amount) AS variance, sum(p.transactions) AS transactions
FROM (
    SELECT r.customer_id, date_trunc('month', r.transaction_date) AS month, sum(r.amount::float8) AS amount,
           count(*) AS transactions
    FROM revenue r
    WHERE r.transaction_date >= coalesce($1::timestamp, '-infinity')
      AND r.transaction_date < coalesce($2::timestamp, 'infinity')
    GROUP BY r.customer_id, date_trunc('month', r.transaction_date)
) p
GROUP BY p.month
