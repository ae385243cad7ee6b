-- The latest instant in the data: the reference for tenure of customers who have not churned.
SELECT greatest(
    (SELECT max(created_at) FROM customers),
    (SELECT max(churn_date) FROM customers),
    (SELECT max(event_timestamp) FROM network_events),
    (SELECT max(transaction_date) FROM revenue)
) AS as_of
