-- Monthly sign-up cohorts: per cohort, customers by whole months lived before churning (NULL: still
-- active at $1 = as_of). A customer has lived k whole months when created_at + k months <= churn_date,
-- with PostgreSQL's month arithmetic (31 Jan + 1 month = 29 Feb).
WITH settings AS (SELECT $1::timestamp AS as_of)
SELECT to_char(date_trunc('month', c.created_at), 'YYYY-MM') AS cohort,
       CASE WHEN c.is_churned IS TRUE AND c.churn_date <= s.as_of THEN
           m.months - (c.created_at + make_interval(months => m.months) > c.churn_date)::int
       END AS months_lived,
       count(*) AS customers
FROM customers c
CROSS JOIN settings s
CROSS JOIN LATERAL (
    SELECT ((extract(year FROM c.churn_date) - extract(year FROM c.created_at)) * 12
            + extract(month FROM c.churn_date) - extract(month FROM c.created_at))::int AS months
) AS m
WHERE c.created_at <= s.as_of
GROUP BY 1, 2
ORDER BY 1, 2
