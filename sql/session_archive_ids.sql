-- Every archived session id (key rotation walks them one by one).
SELECT session_id::text AS session_id
FROM mcp_internal.session_archive
ORDER BY session_id
