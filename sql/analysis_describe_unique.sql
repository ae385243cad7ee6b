-- Summary of a column a primary key or unique constraint keeps distinct: no grouping needed, every value
-- occurs once; the "top" values are the first five in the column's order (its index serves them).
-- {table} is an allow-listed analytics table and {column} a catalog column, quoted (warehouse/aggregates.py).
SELECT count({column}) AS present,
       count({column}) AS distinct_values,
       min(length({column}::text)) AS min_length,
       max(length({column}::text)) AS max_length,
       (SELECT array_agg(value) FROM (
            SELECT {column}::text AS value FROM {table} WHERE {column} IS NOT NULL ORDER BY {column} LIMIT 5
        ) AS first_values) AS top_values
FROM {table}
