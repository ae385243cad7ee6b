-- Rows of one table; {table} is an allow-listed analytics table (warehouse/aggregates.py).
SELECT count(*) AS rows FROM {table}
