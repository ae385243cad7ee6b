-- Columns of the analytics tables ($1: the allow-list, schema public only), in table order.
SELECT
    c.relname::text                              AS table_name,
    a.attnum                                     AS position,
    a.attname::text                              AS column_name,
    pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type,
    NOT a.attnotnull                             AS nullable,
    pg_catalog.pg_get_expr(d.adbin, d.adrelid)   AS default_value,
    col_description(c.oid, a.attnum)             AS comment
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'public'
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($1::text[])
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY array_position($1::text[], c.relname::text), a.attnum
