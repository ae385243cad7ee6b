-- What the query role (the setting analytics_mcp.query_role: the server's own role, or the account of
-- DATABASE_QUERY_URL) may read: the analytics tables and the sandbox schema (load_to_table), nothing in
-- mcp_internal. Applied on every start, after the schema.
CREATE SCHEMA IF NOT EXISTS sandbox;
REVOKE ALL ON SCHEMA mcp_internal FROM PUBLIC;
DO $$
DECLARE
    reader TEXT := current_setting('analytics_mcp.query_role');
BEGIN
    BEGIN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), reader);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;  -- not the database's owner: CONNECT is PUBLIC's unless the owner revoked it
    END;
    EXECUTE format('GRANT USAGE ON SCHEMA public, sandbox TO %I', reader);
    EXECUTE format('GRANT SELECT ON customers, network_events, revenue TO %I', reader);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA sandbox TO %I', reader);
    EXECUTE format('REVOKE ALL ON SCHEMA mcp_internal FROM %I', reader);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA mcp_internal FROM %I', reader);
END
$$;
-- Statistics and activity views (pg_stat_activity, pg_stat_all_tables ..., pg_statio_*, pg_locks,
-- pg_prepared_xacts, pg_stat_statements) and the functions behind them show what every session does,
-- the server's own included: PUBLIC (so the query role) may no longer read them in this database;
-- pg_monitor keeps them for monitoring. Only a superuser may change catalog privileges; otherwise the
-- SQL guard still refuses them by name. A no-op once done (only what PUBLIC still holds is revoked).
DO $$
DECLARE
    item record;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    FOR item IN
        SELECT c.oid::regclass::text AS name
        FROM pg_class AS c
        WHERE c.relkind = 'v'
          AND has_table_privilege('public', c.oid, 'SELECT')
          AND (
              (c.relnamespace = 'pg_catalog'::regnamespace
               AND (c.relname LIKE 'pg\_stat\_%' OR c.relname LIKE 'pg\_statio\_%'
                    OR c.relname IN ('pg_locks', 'pg_prepared_xacts', 'pg_replication_slots')))
              OR c.relname LIKE 'pg\_stat\_statements%'
          )
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', item.name);
        EXECUTE format('GRANT SELECT ON %s TO pg_monitor', item.name);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure::text AS name
        FROM pg_proc AS p
        WHERE has_function_privilege('public', p.oid, 'EXECUTE')
          AND (
              (p.pronamespace = 'pg_catalog'::regnamespace
               AND (p.proname LIKE 'pg\_stat\_get\_%'
                    OR p.proname IN ('pg_lock_status', 'pg_prepared_xact', 'pg_blocking_pids',
                                     'pg_safe_snapshot_blocking_pids', 'pg_get_replication_slots')))
              OR p.proname LIKE 'pg\_stat\_statements%'
          )
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', item.name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pg_monitor', item.name);
    END LOOP;
END
$$;
