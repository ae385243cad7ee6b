-- The first five values of a NOT NULL uuid key column in its index order: the column needs no scan, as
-- the key makes every value distinct and present and a uuid's text is always 36 characters long.
-- {table} is an allow-listed analytics table and {column} a catalog column, quoted (warehouse/aggregates.py).
SELECT array_agg(value) AS top_values
FROM (SELECT {column}::text AS value FROM {table} ORDER BY {column} LIMIT 5) AS first_values
