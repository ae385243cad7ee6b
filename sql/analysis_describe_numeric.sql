-- Summary of one numeric column from its value histogram: one hash aggregate over the rows, then the
-- figures from the (much smaller) histogram. Quartiles interpolate linearly between order statistics,
-- as percentile_cont and pandas do. {table} is an allow-listed analytics table and {column} a column
-- read from the catalog, quoted (warehouse/aggregates.py).
WITH histogram AS (
    SELECT {column}::float8 AS value, count(*)::float8 AS n
    FROM {table}
    WHERE {column} IS NOT NULL
    GROUP BY 1
),
totals AS (
    SELECT sum(n) AS present, count(*) AS distinct_values, sum(n * value) / nullif(sum(n), 0) AS mean
    FROM histogram
),
cumulative AS (
    SELECT value, sum(n) OVER (ORDER BY value) AS upto FROM histogram
),
positions AS (
    SELECT q, (t.present - 1) * q AS position
    FROM totals t CROSS JOIN unnest(ARRAY[0.25, 0.5, 0.75]::float8[]) AS q
),
quartiles AS (
    SELECT p.q,
           min(c.value) FILTER (WHERE c.upto > floor(p.position)) AS low,
           min(c.value) FILTER (WHERE c.upto > ceil(p.position)) AS high,
           p.position - floor(p.position) AS fraction
    FROM positions p CROSS JOIN cumulative c
    GROUP BY p.q, p.position
)
SELECT coalesce(t.present, 0)::bigint AS present,
       t.distinct_values,
       t.mean,
       (SELECT sqrt(sum(h.n * (h.value - t.mean) ^ 2) / nullif(t.present - 1, 0)) FROM histogram h) AS std,
       (SELECT min(value) FROM histogram) AS minimum,
       (SELECT max(value) FROM histogram) AS maximum,
       (SELECT sum(n * value) FROM histogram) AS total,
       (SELECT array_agg(low + (high - low) * fraction ORDER BY q) FROM quartiles) AS quartiles
FROM totals t
