-- First look for an agent: row counts, date ranges, churn and revenue totals in one round trip.
SELECT
    (SELECT count(*) FROM customers)                                   AS customers,
    (SELECT count(*) FILTER (WHERE is_churned) FROM customers)         AS churned_customers,
    (SELECT min(created_at) FROM customers)                            AS customers_first_created,
    (SELECT max(created_at) FROM customers)                            AS customers_last_created,
    (SELECT count(*) FROM network_events)                              AS network_events,
    (SELECT min(event_timestamp) FROM network_events)                  AS events_first,
    (SELECT max(event_timestamp) FROM network_events)                  AS events_last,
    (SELECT avg(network_quality_score) FROM network_events)            AS mean_network_quality,
    (SELECT count(*) FROM revenue)                                     AS revenue_rows,
    (SELECT min(transaction_date) FROM revenue)                        AS revenue_first,
    (SELECT max(transaction_date) FROM revenue)                        AS revenue_last,
    (SELECT coalesce(sum(amount), 0) FROM revenue)                     AS revenue_total
