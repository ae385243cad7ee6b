-- Primary keys, unique, foreign-key, exclusion and CHECK constraints of the analytics tables ($1).
-- NOT NULL constraints (catalogued as contype 'n' from PostgreSQL 18) are reported per column instead.
SELECT
    c.relname::text                                      AS table_name,
    con.conname::text                                    AS constraint_name,
    con.contype::text                                    AS kind,
    pg_catalog.pg_get_constraintdef(con.oid, true)       AS definition,
    ARRAY(
        SELECT a.attname::text
        FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        ORDER BY k.ord
    )                                                    AS columns,
    referenced.relname::text                             AS referenced_table,
    ARRAY(
        SELECT a.attname::text
        FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
        ORDER BY k.ord
    )                                                    AS referenced_columns
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class AS referenced ON referenced.oid = con.confrelid
WHERE n.nspname = 'public'
  AND c.relname = ANY($1::text[])
  AND con.contype IN ('p', 'u', 'f', 'c', 'x')
ORDER BY
    array_position($1::text[], c.relname::text),
    array_position(ARRAY['p', 'u', 'f', 'x', 'c'], con.contype::text),
    con.conname
