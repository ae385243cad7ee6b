-- Churn per segment over the customers in one block range ($2 <= ctid < $3: the whole table, or one part
-- of it while the other parts run side by side), a NULL is_churned counting as not churned; with the data
-- version and the table's size in pages as this statement's snapshot sees them (always one row, NULL
-- counts when the range holds no customers). {segment} is an allow-listed expression over customers c
-- (warehouse/aggregates.py); $1 = as_of.
WITH settings AS (SELECT $1::timestamp AS as_of)
SELECT part.segment, part.customers, part.churned, seen.data_version, seen.table_pages
FROM (
    SELECT (SELECT version FROM mcp_internal.data_version) AS data_version,
           pg_relation_size('customers') / current_setting('block_size')::int AS table_pages
) seen
LEFT JOIN (
    SELECT {segment} AS segment,
           count(*) AS customers,
           count(*) FILTER (WHERE c.is_churned) AS churned
    FROM customers c CROSS JOIN settings s
    WHERE c.ctid >= $2::tid AND c.ctid < $3::tid
    GROUP BY 1
) part ON true
