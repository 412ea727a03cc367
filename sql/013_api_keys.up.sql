-- The gateway API's keys and its read-only group role.
--
-- A key is a random bearer token shown once at `api-keys create`; only its SHA-256 and a
-- short visible prefix (to find it, and for people to tell keys apart) are stored. A scope
-- says what the key may do (ingest: POST /v1/events; read: balances, entitlements, usage;
-- admin: both); user_ids, when not NULL, restricts it to those users (a tenant's gateway).
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    prefix       text        NOT NULL UNIQUE,
    token_sha256 bytea       NOT NULL CHECK (octet_length(token_sha256) = 32),
    scope        text        NOT NULL CHECK (scope IN ('ingest', 'read', 'admin')),
    user_ids     uuid[]      CHECK (cardinality(user_ids) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- api_reader: what `usage-pipeline api` reads, nothing it could write. It never touches
-- the books, and publishes events to Kafka rather than inserting them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'api_reader') THEN
        CREATE ROLE api_reader NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA public TO api_reader;
GRANT SELECT ON
    api_keys, users, user_credit_balance, user_credit_source,
    token_usage_daily_summary, credit_usage_daily_summary
TO api_reader;
