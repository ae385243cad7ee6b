-- The least-privilege role agent queries run as: SELECT on the analytics tables, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analytics_mcp_reader') THEN
        CREATE ROLE analytics_mcp_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another instance created it at the same moment
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT analytics_mcp_reader TO %I', current_user);
EXCEPTION WHEN others THEN
    NULL;  -- a superuser needs no membership; a role granted already is fine
END
$$;
GRANT USAGE ON SCHEMA public TO analytics_mcp_reader;
GRANT SELECT ON customers, network_events, revenue TO analytics_mcp_reader;
REVOKE ALL ON SCHEMA mcp_internal FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA mcp_internal FROM analytics_mcp_reader;
