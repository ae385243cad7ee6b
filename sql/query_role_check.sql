-- Who the agent-query pool logged in as, and anything that would let its SQL reach beyond reading:
-- superuser, replication, row-security bypass, or membership (direct or not) in a predefined pg_* role.
SELECT current_user AS role_name,
       r.rolsuper OR r.rolreplication OR r.rolbypassrls AS privileged,
       ARRAY(
           SELECT p.rolname::text
           FROM pg_catalog.pg_roles AS p
           WHERE p.oid < 16384 AND p.rolname LIKE 'pg\_%' AND p.oid <> r.oid
             AND pg_has_role(r.oid, p.oid, 'MEMBER')
           ORDER BY 1
       ) AS predefined_roles
FROM pg_catalog.pg_roles AS r
WHERE r.rolname = current_user;
