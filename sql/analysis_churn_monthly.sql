-- New and churned customers per calendar month; the active base at each month's start follows from them.
SELECT to_char(date_trunc('month', created_at), 'YYYY-MM') AS month,
       count(*) AS new_customers,
       0::bigint AS churned
FROM customers
GROUP BY 1
UNION ALL
SELECT to_char(date_trunc('month', churn_date), 'YYYY-MM') AS month,
       0::bigint AS new_customers,
       count(*) AS churned
FROM customers
WHERE is_churned
GROUP BY 1
