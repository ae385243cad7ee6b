-- The role agent queries log in as (their own pool, warehouse/db.py): a LOGIN role that is nothing
-- else, so no SQL, however nested, can switch to a stronger one. One per database (roles are cluster-wide;
-- databases sharing a cluster must not fight over one password): warehouse/db.py names it and passes the
-- name in the setting analytics_mcp.query_role. Its password is generated here, from PostgreSQL's strong
-- random source, and kept in mcp_internal.query_login, which only the owner of the schema reads.
-- Needs CREATEROLE (or a superuser); without it set DATABASE_QUERY_URL to an account you made instead.
CREATE TABLE IF NOT EXISTS mcp_internal.query_login (
    role_name  NAME PRIMARY KEY,
    password   TEXT NOT NULL
);
REVOKE ALL ON mcp_internal.query_login FROM PUBLIC;
INSERT INTO mcp_internal.query_login (role_name, password)
VALUES (
    current_setting('analytics_mcp.query_role'),
    replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
)
ON CONFLICT (role_name) DO NOTHING;
DO $$
DECLARE
    login mcp_internal.query_login;
    granted record;
BEGIN
    SELECT * INTO STRICT login FROM mcp_internal.query_login
    WHERE role_name = current_setting('analytics_mcp.query_role');
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = login.role_name) THEN
        BEGIN
            EXECUTE format(
                'CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
                'NOINHERIT PASSWORD %L', login.role_name, login.password);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- an instance on another database with the same name created it at the same moment
        END;
    END IF;
    -- Every start: the attributes and the password are what this table says, whatever happened since.
    EXECUTE format(
        'ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
        'NOINHERIT PASSWORD %L', login.role_name, login.password);
    EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', login.role_name);
    -- A member of nothing: not of another role, not of a predefined pg_* role.
    FOR granted IN
        SELECT m.roleid::regrole::text AS role_name
        FROM pg_auth_members AS m JOIN pg_roles AS r ON r.oid = m.member
        WHERE r.rolname = login.role_name
    LOOP
        EXECUTE format('REVOKE %s FROM %I', granted.role_name, login.role_name);
    END LOOP;
END
$$;
