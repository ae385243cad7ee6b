-- The analytics tables ($1: the allow-list, schema public only): planner row estimate, size, comment.
-- reltuples is -1 for a table never vacuumed or analysed (PostgreSQL 14+).
SELECT
    c.relname::text                          AS table_name,
    c.reltuples::bigint                      AS estimated_rows,
    pg_total_relation_size(c.oid)            AS total_bytes,
    obj_description(c.oid, 'pg_class')       AS comment
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($1::text[])
ORDER BY array_position($1::text[], c.relname::text)
