-- How far the read replica (DATABASE_READ_URL) is behind its primary, in seconds, run on the replica by
-- warehouse/replica.py. 0 when it has replayed all the WAL it received (an idle primary writes no
-- transactions, so the age of the last replayed one is not lag); 0 on a server that is not a standby.
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0.0
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0
    ELSE greatest(0.0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))::float8
END AS lag_seconds
