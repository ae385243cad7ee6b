-- The schema load_to_table writes session datasets into; agent queries (the query role, granted USAGE at
-- start-up by query_grants.sql and SELECT per table by warehouse/sandbox.py) may read it.
CREATE SCHEMA IF NOT EXISTS sandbox;
