-- analytics-mcp schema: the three analytics tables and the server's own schema mcp_internal.
-- Idempotent: applied on every start and by `analytics-mcp seed`. Runs on PostgreSQL 15 and 18.

CREATE TABLE IF NOT EXISTS customers (
    customer_id   UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    age           INTEGER CHECK (age >= 18 AND age <= 120),
    -- VARCHAR(20), not the design's (10): 'Unspecified' is 11 characters.
    gender        VARCHAR(20) CHECK (gender IN ('Male', 'Female', 'Other', 'Unspecified')),
    location      VARCHAR(100),
    account_type  VARCHAR(50) CHECK (account_type IN ('Basic', 'Premium', 'Enterprise')),
    is_churned    BOOLEAN DEFAULT FALSE,
    churn_date    TIMESTAMP,
    -- churn_date is set exactly when the customer has churned, and never before sign-up.
    CONSTRAINT customers_churn_date_matches CHECK (
        (is_churned IS TRUE AND churn_date IS NOT NULL AND churn_date >= created_at)
        OR (is_churned IS NOT TRUE AND churn_date IS NULL)
    )
);

CREATE INDEX IF NOT EXISTS idx_customers_created_at ON customers (created_at);
CREATE INDEX IF NOT EXISTS idx_customers_account_type ON customers (account_type);
CREATE INDEX IF NOT EXISTS idx_customers_is_churned ON customers (is_churned);
CREATE INDEX IF NOT EXISTS idx_customers_is_churned_created_at ON customers (is_churned, created_at);

CREATE TABLE IF NOT EXISTS network_events (
    event_id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id            UUID NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    event_timestamp        TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    event_type             VARCHAR(50) CHECK (event_type IN ('call', 'sms', 'data')),
    network_quality_score  FLOAT CHECK (network_quality_score >= 1.0 AND network_quality_score <= 5.0),
    duration_seconds       INTEGER CHECK (duration_seconds >= 0),
    data_usage_mb          FLOAT CHECK (data_usage_mb >= 0)
);

CREATE INDEX IF NOT EXISTS idx_network_events_customer_id ON network_events (customer_id);
CREATE INDEX IF NOT EXISTS idx_network_events_timestamp ON network_events (event_timestamp);
CREATE INDEX IF NOT EXISTS idx_network_events_type ON network_events (event_type);
CREATE INDEX IF NOT EXISTS idx_network_events_customer_timestamp
    ON network_events (customer_id, event_timestamp);

CREATE TABLE IF NOT EXISTS revenue (
    transaction_id    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id       UUID NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    transaction_date  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    amount            DECIMAL(10, 2) NOT NULL CHECK (amount >= 0),
    service_type      VARCHAR(50) CHECK (service_type IN ('voice', 'data', 'sms', 'subscription')),
    payment_method    VARCHAR(50)
        CHECK (payment_method IN ('credit_card', 'debit_card', 'bank_transfer', 'mobile_wallet'))
);

CREATE INDEX IF NOT EXISTS idx_revenue_customer_id ON revenue (customer_id);
CREATE INDEX IF NOT EXISTS idx_revenue_transaction_date ON revenue (transaction_date);
CREATE INDEX IF NOT EXISTS idx_revenue_service_type ON revenue (service_type);

-- The server's own tables. Agent queries run as a role with no access to this schema.
CREATE SCHEMA IF NOT EXISTS mcp_internal;

CREATE TABLE IF NOT EXISTS mcp_internal.data_version (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    version     BIGINT NOT NULL DEFAULT 0,
    seed        BIGINT,
    customers   BIGINT,
    start_date  DATE,
    end_date    DATE,
    loaded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO mcp_internal.data_version (id, version) VALUES (TRUE, 0) ON CONFLICT (id) DO NOTHING;
-- Whoever bumps the version (a load, reset_data, another instance, an operator) tells every instance
-- in the same transaction: PostgreSQL delivers the notice at commit (warehouse/versions.py listens).
CREATE OR REPLACE FUNCTION mcp_internal.data_version_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('analytics_mcp_data_version', NEW.version::text);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER data_version_notify AFTER INSERT OR UPDATE ON mcp_internal.data_version
    FOR EACH ROW EXECUTE FUNCTION mcp_internal.data_version_notify();

CREATE TABLE IF NOT EXISTS mcp_internal.query_log (
    id           BIGSERIAL PRIMARY KEY,
    logged_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_id      TEXT NOT NULL,
    query_hash   TEXT NOT NULL,
    duration_ms  DOUBLE PRECISION NOT NULL,
    row_count    BIGINT,
    outcome      TEXT NOT NULL,
    cached       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS idx_query_log_logged_at ON mcp_internal.query_log (logged_at);
-- The data source the query ran on (ANALYTICS_MCP_SOURCES); `main` is the built-in database.
ALTER TABLE mcp_internal.query_log ADD COLUMN IF NOT EXISTS source TEXT NOT NULL DEFAULT 'main';
-- The query with its literals shown as ? (identifiers and aliases kept): what the operator console shows.
ALTER TABLE mcp_internal.query_log ADD COLUMN IF NOT EXISTS query_text TEXT;
CREATE INDEX IF NOT EXISTS idx_query_log_user_logged_at ON mcp_internal.query_log (user_id, logged_at);

CREATE TABLE IF NOT EXISTS mcp_internal.audit_log (
    id           BIGSERIAL PRIMARY KEY,
    logged_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    request_id   TEXT,
    event        TEXT NOT NULL,
    user_id      TEXT,
    key_id       TEXT,
    tool         TEXT,
    session_id   TEXT,
    duration_ms  DOUBLE PRECISION,
    outcome      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_audit_log_logged_at ON mcp_internal.audit_log (logged_at);

CREATE TABLE IF NOT EXISTS mcp_internal.session_archive (
    session_id   UUID PRIMARY KEY,
    owner_id     TEXT NOT NULL,
    archived_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    metadata     BYTEA NOT NULL,
    payload      BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_session_archive_owner ON mcp_internal.session_archive (owner_id);

-- Profiles (metadata cards) of the data sources' tables (warehouse/profiles.py), one row per table.
CREATE TABLE IF NOT EXISTS mcp_internal.source_profiles (
    source       TEXT NOT NULL,
    table_name   TEXT NOT NULL,
    profiled_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    profile      JSONB NOT NULL,
    PRIMARY KEY (source, table_name)
);
