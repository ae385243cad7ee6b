-- Customer lifetimes for Kaplan-Meier, counted per (segment, whole days, churned) inside PostgreSQL.
-- A lifetime runs from created_at to churn_date, or to $1 (as_of) for customers still active then;
-- churn after as_of is censored at as_of, and customers who sign up after as_of are left out.
-- {segment} is an allow-listed expression over customers c (warehouse/aggregates.py).
WITH settings AS (SELECT $1::timestamp AS as_of)
SELECT {segment} AS segment,
       floor(extract(epoch FROM (least(coalesce(c.churn_date, s.as_of), s.as_of) - c.created_at)) / 86400.0)::int
           AS lifetime_days,
       (c.is_churned IS TRUE AND c.churn_date <= s.as_of) AS churned,
       count(*) AS customers
FROM customers c CROSS JOIN settings s
WHERE c.created_at <= s.as_of
GROUP BY 1, 2, 3
