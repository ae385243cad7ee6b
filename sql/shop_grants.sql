-- The demo `shop` source (warehouse/demo_shop.py) reads schema `shop` of the built-in database as the
-- query role (the setting analytics_mcp.query_role): USAGE on the schema and SELECT on its tables, no more.
DO $$
DECLARE
    reader TEXT := current_setting('analytics_mcp.query_role');
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA shop TO %I', reader);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA shop TO %I', reader);
END
$$;
