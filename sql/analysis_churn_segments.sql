-- Churn per segment: customers and churned customers (a NULL is_churned counts as not churned).
-- {segment} is an allow-listed expression over customers c (warehouse/aggregates.py); $1 = as_of.
WITH settings AS (SELECT $1::timestamp AS as_of)
SELECT {segment} AS segment,
       count(*) AS customers,
       count(*) FILTER (WHERE c.is_churned) AS churned
FROM customers c CROSS JOIN settings s
GROUP BY 1
