-- Before a bulk load (inside its transaction, after TRUNCATE): drop what is cheaper to rebuild once.
ALTER TABLE network_events DROP CONSTRAINT IF EXISTS network_events_customer_id_fkey;
ALTER TABLE revenue DROP CONSTRAINT IF EXISTS revenue_customer_id_fkey;
ALTER TABLE network_events DROP CONSTRAINT IF EXISTS network_events_pkey;
ALTER TABLE revenue DROP CONSTRAINT IF EXISTS revenue_pkey;
DROP INDEX IF EXISTS idx_network_events_customer_id;
DROP INDEX IF EXISTS idx_network_events_timestamp;
DROP INDEX IF EXISTS idx_network_events_type;
DROP INDEX IF EXISTS idx_network_events_customer_timestamp;
DROP INDEX IF EXISTS idx_revenue_customer_id;
DROP INDEX IF EXISTS idx_revenue_transaction_date;
DROP INDEX IF EXISTS idx_revenue_service_type;
