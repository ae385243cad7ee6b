-- One batch of audit events (mcp_internal.audit_log), as parallel arrays: one round trip per batch.
INSERT INTO mcp_internal.audit_log
    (logged_at, request_id, event, user_id, key_id, tool, session_id, duration_ms, outcome)
SELECT *
FROM unnest(
    $1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::text[], $7::text[], $8::double precision[], $9::text[]
)
