-- Plan 112: the two immutable ledgers. One token_usage_ledger row per request; one
-- credit_deduction_ledger row per balance change (deduction, grant, expiry, reversal).
-- Immutability is enforced by privileges (009_roles_and_privileges), not by triggers, so
-- that deleting a user as the owner still cascades.

CREATE TABLE credit_deduction_ledger (
    id                 uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Signed: negative for a deduction, positive for a grant or reversal.
    amount             integer        NOT NULL,
    balance_before     integer        NOT NULL,
    balance_after      integer        NOT NULL,
    -- NULL for balance changes without a request (grants, expirations, reversals); the
    -- UNIQUE constraint's index also serves lookups by request_id.
    request_id         uuid           UNIQUE,
    token_vendor_cost  numeric(10, 8),
    margin_multiplier  numeric(4, 2),
    gross_margin       numeric(10, 8),
    reason             varchar(50)    NOT NULL,
    status             varchar(20)    NOT NULL DEFAULT 'pending',
    reversed_at        timestamptz,
    reversed_by        uuid           REFERENCES users (id) ON DELETE SET NULL,
    reversal_reason    text,
    processed_at       timestamptz    NOT NULL DEFAULT now(),
    created_at         timestamptz    NOT NULL DEFAULT now(),
    -- Not in the seed: the per-row half of the balance chain invariant.
    CONSTRAINT credit_deduction_ledger_balance_chain_check
        CHECK (balance_after = balance_before + amount)
);

CREATE INDEX credit_deduction_ledger_user_id_created_at_idx
    ON credit_deduction_ledger (user_id, created_at);
CREATE INDEX credit_deduction_ledger_status_idx ON credit_deduction_ledger (status);
CREATE INDEX credit_deduction_ledger_reason_idx ON credit_deduction_ledger (reason);
CREATE INDEX credit_deduction_ledger_reversed_by_idx ON credit_deduction_ledger (reversed_by);

CREATE TABLE token_usage_ledger (
    id                    uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The UNIQUE constraint's index also serves lookups by request_id.
    request_id            uuid           NOT NULL UNIQUE,
    user_id               uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id       uuid           REFERENCES subscription_monetization (id) ON DELETE SET NULL,
    model_id              varchar(255)   NOT NULL,
    provider_id           uuid           NOT NULL REFERENCES providers (id) ON DELETE RESTRICT,
    input_tokens          integer        NOT NULL,
    output_tokens         integer        NOT NULL,
    cached_input_tokens   integer        NOT NULL DEFAULT 0,
    -- Not in the seed: cache writes are priced at the cache-input price.
    cache_write_tokens    integer        NOT NULL DEFAULT 0,
    total_tokens          integer        NOT NULL
        GENERATED ALWAYS AS (input_tokens + output_tokens) STORED,
    vendor_cost           numeric(10, 8) NOT NULL,
    margin_multiplier     numeric(4, 2)  NOT NULL,
    credit_value_usd      numeric(10, 8) NOT NULL,
    credits_deducted      integer        NOT NULL,
    gross_margin_usd      numeric(10, 8) NOT NULL
        GENERATED ALWAYS AS (credit_value_usd - vendor_cost) STORED,
    request_type          varchar(20)    NOT NULL,
    streaming_segments    integer,
    request_started_at    timestamptz    NOT NULL,
    request_completed_at  timestamptz    NOT NULL,
    processing_time_ms    integer,
    status                varchar(20)    NOT NULL DEFAULT 'success',
    error_message         text,
    is_streaming_complete boolean        NOT NULL DEFAULT true,
    user_tier_at_request  varchar(50),
    region                varchar(50),
    -- One deduction per request (a one-to-one relation, hence UNIQUE). The ledger is
    -- append-only, so the deduction row is written first and referenced here on insert.
    deduction_record_id   uuid           UNIQUE
        REFERENCES credit_deduction_ledger (id) ON DELETE SET NULL,
    -- Not in the seed: sha256 of the normalized event, which tells a redelivery (same
    -- request_id, same fingerprint) from a conflicting duplicate (different fingerprint).
    event_fingerprint     bytea          NOT NULL,
    created_at            timestamptz    NOT NULL DEFAULT now()
);

CREATE INDEX token_usage_ledger_user_id_created_at_idx ON token_usage_ledger (user_id, created_at);
CREATE INDEX token_usage_ledger_model_id_created_at_idx ON token_usage_ledger (model_id, created_at);
CREATE INDEX token_usage_ledger_provider_id_created_at_idx
    ON token_usage_ledger (provider_id, created_at);
CREATE INDEX token_usage_ledger_user_id_vendor_cost_idx ON token_usage_ledger (user_id, vendor_cost);
CREATE INDEX token_usage_ledger_status_idx ON token_usage_ledger (status);
CREATE INDEX token_usage_ledger_subscription_id_idx ON token_usage_ledger (subscription_id);
