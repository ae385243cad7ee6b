-- Summary of one text-like column (text, varchar, uuid, ...) from its value counts: distinct values,
-- length range and the most frequent values (ties in the column's own order). {table} is an allow-listed analytics table
-- and {column} a column read from the catalog, quoted (warehouse/aggregates.py).
WITH counts AS (
    SELECT {column} AS value, count(*) AS n
    FROM {table}
    WHERE {column} IS NOT NULL
    GROUP BY 1
),
top AS (
    SELECT value, n FROM counts ORDER BY n DESC, value LIMIT 5
)
SELECT coalesce(sum(n), 0)::bigint AS present,
       count(*) AS distinct_values,
       min(length(value::text)) AS min_length,
       max(length(value::text)) AS max_length,
       (SELECT array_agg(value::text ORDER BY n DESC, value) FROM top) AS top_values,
       (SELECT array_agg(n ORDER BY n DESC, value) FROM top) AS top_counts
FROM counts
