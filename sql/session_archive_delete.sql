DELETE FROM mcp_internal.session_archive WHERE session_id = $1::uuid
