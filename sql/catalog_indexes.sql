-- Indexes of the analytics tables ($1): key columns or expressions, method, uniqueness, partial predicate.
SELECT
    c.relname::text                                      AS table_name,
    i.relname::text                                      AS index_name,
    am.amname::text                                      AS method,
    x.indisunique                                        AS is_unique,
    x.indisprimary                                       AS is_primary,
    ARRAY(
        SELECT pg_catalog.pg_get_indexdef(x.indexrelid, k, true)
        FROM generate_series(1, x.indnkeyatts::int) AS k
        ORDER BY k
    )                                                    AS key_columns,
    pg_catalog.pg_get_expr(x.indpred, x.indrelid, true)  AS predicate,
    pg_catalog.pg_relation_size(i.oid)                   AS size_bytes
FROM pg_catalog.pg_index AS x
JOIN pg_catalog.pg_class AS c ON c.oid = x.indrelid
JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_am AS am ON am.oid = i.relam
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'
  AND c.relname = ANY($1::text[])
ORDER BY array_position($1::text[], c.relname::text), x.indisprimary DESC, i.relname
