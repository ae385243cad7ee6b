-- Summary of one boolean column. {table} is an allow-listed analytics table and {column} a catalog
-- column, quoted (warehouse/aggregates.py).
SELECT count({column}) AS present,
       count(DISTINCT {column}) AS distinct_values,
       count(*) FILTER (WHERE {column}) AS true_count
FROM {table}
