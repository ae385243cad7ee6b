-- Opens the transaction an agent query (query_database) runs in: read only, with time limits, and with
-- the string syntax the SQL guard assumed when it scanned the text. No SET ROLE: the connection logs in
-- as the query role itself (warehouse/db.py), so nothing in the query can switch back to a stronger one.
-- warehouse/query.py fills in two integers (milliseconds) and nothing else; it always rolls back.
BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY;
SET LOCAL statement_timeout = {statement_timeout_ms};
SET LOCAL idle_in_transaction_session_timeout = {idle_timeout_ms};
SET LOCAL lock_timeout = {statement_timeout_ms};
SET LOCAL standard_conforming_strings = on;
