-- One row per customer: is_churned and the churn-driver features, aggregated inside PostgreSQL.
-- tenure_days runs to churn_date, or to $1 (as_of) for customers still active; no events gives a NULL
-- avg_network_quality (the model leaves such customers out and says how many).
WITH activity AS (
    SELECT customer_id,
           avg(network_quality_score) AS avg_network_quality,
           count(*) AS event_count,
           coalesce(sum(data_usage_mb), 0) AS total_data_usage_mb
    FROM network_events
    GROUP BY customer_id
),
payments AS (
    SELECT customer_id, sum(amount) AS total_revenue
    FROM revenue
    GROUP BY customer_id
)
SELECT (coalesce(c.is_churned, FALSE))::int::float8 AS is_churned,
       c.age::float8 AS age,
       extract(epoch FROM (coalesce(c.churn_date, $1::timestamp) - c.created_at))::float8 / 86400.0 AS tenure_days,
       c.account_type::text AS account_type,
       a.avg_network_quality::float8 AS avg_network_quality,
       coalesce(a.event_count, 0)::float8 AS event_count,
       coalesce(a.total_data_usage_mb, 0)::float8 AS total_data_usage_mb,
       coalesce(p.total_revenue, 0)::float8 AS total_revenue
FROM customers c
LEFT JOIN activity a ON a.customer_id = c.customer_id
LEFT JOIN payments p ON p.customer_id = c.customer_id
ORDER BY c.customer_id
