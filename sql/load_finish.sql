-- After a bulk load (same transaction): put back keys and foreign keys exactly as schema.sql has them;
-- schema.sql itself then recreates the secondary indexes.
ALTER TABLE network_events ADD CONSTRAINT network_events_pkey PRIMARY KEY (event_id);
ALTER TABLE revenue ADD CONSTRAINT revenue_pkey PRIMARY KEY (transaction_id);
ALTER TABLE network_events ADD CONSTRAINT network_events_customer_id_fkey
    FOREIGN KEY (customer_id) REFERENCES customers (customer_id) ON DELETE CASCADE;
ALTER TABLE revenue ADD CONSTRAINT revenue_customer_id_fkey
    FOREIGN KEY (customer_id) REFERENCES customers (customer_id) ON DELETE CASCADE;
