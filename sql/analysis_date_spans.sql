-- The first and last day of each dated table (each min/max reads its index): named in the answer when
-- an analysis's start_date/end_date leave no rows.
SELECT (SELECT min(transaction_date)::date FROM revenue) AS revenue_first,
       (SELECT max(transaction_date)::date FROM revenue) AS revenue_last,
       (SELECT min(event_timestamp)::date FROM network_events) AS events_first,
       (SELECT max(event_timestamp)::date FROM network_events) AS events_last,
       (SELECT min(created_at)::date FROM customers) AS customers_first,
       (SELECT max(created_at)::date FROM customers) AS customers_last
