-- The functions PostgreSQL itself ships: in pg_catalog, with OIDs below FirstNormalObjectId (16384),
-- so not an extension's nor anyone's own. Read once at start-up: the SQL guard lets agent queries call
-- these (minus those that run SQL text or touch server state) and the operator's allowlist only.
SELECT DISTINCT p.proname::text AS name
FROM pg_catalog.pg_proc AS p
WHERE p.pronamespace = 'pg_catalog'::regnamespace
  AND p.oid < 16384;
