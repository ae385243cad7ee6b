-- Names the call a pooled connection serves (application_name = 'analytics-mcp/<request id>'), for
-- pg_stat_activity and PostgreSQL's own log (%a in log_line_prefix). Session-level on purpose: the
-- pool's RESET ALL on release puts the connection's default back.
SELECT set_config('application_name', $1, false)
