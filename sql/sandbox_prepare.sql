-- The schema load_to_table writes session datasets into; agent queries (the reader role) may read it.
CREATE SCHEMA IF NOT EXISTS sandbox;
GRANT USAGE ON SCHEMA sandbox TO analytics_mcp_reader;
