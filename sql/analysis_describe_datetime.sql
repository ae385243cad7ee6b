-- Summary of one date or timestamp column. {table} is an allow-listed analytics table and {column} a
-- catalog column, quoted (warehouse/aggregates.py).
SELECT count({column}) AS present,
       count(DISTINCT {column}) AS distinct_values,
       min({column}) AS minimum,
       max({column}) AS maximum
FROM {table}
