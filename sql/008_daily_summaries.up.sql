-- Plan 112: per user and UTC day rollups of the two ledgers. The books: every row must
-- equal the sums of that user's ledger rows of that day.
--
-- total_vendor_cost and total_gross_margin are numeric(18, 8), not the seed's
-- numeric(12, 2): per-request costs are sub-cent numeric(10, 8) values, and rounding their
-- sum to cents would make a summary row differ from its ledger sum. 18 digits with 8
-- decimals holds sums of up to 10^10 USD at full ledger precision.
-- The (user_id, summary_date) UNIQUE constraint's index also serves the seed's index on
-- the same columns.

CREATE TABLE token_usage_daily_summary (
    id                     uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    summary_date           date           NOT NULL,
    total_requests         integer        NOT NULL DEFAULT 0,
    total_input_tokens     integer        NOT NULL DEFAULT 0,
    total_output_tokens    integer        NOT NULL DEFAULT 0,
    total_vendor_cost      numeric(18, 8) NOT NULL DEFAULT 0,
    total_credits_deducted integer        NOT NULL DEFAULT 0,
    total_gross_margin     numeric(18, 8) NOT NULL DEFAULT 0,
    avg_request_latency_ms integer,
    success_rate           numeric(5, 2),
    created_at             timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (user_id, summary_date)
);

CREATE INDEX token_usage_daily_summary_summary_date_idx ON token_usage_daily_summary (summary_date);

CREATE TABLE credit_usage_daily_summary (
    id                 uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    summary_date       date           NOT NULL,
    total_deductions   integer        NOT NULL DEFAULT 0,
    total_requests     integer        NOT NULL DEFAULT 0,
    total_vendor_cost  numeric(18, 8) NOT NULL DEFAULT 0,
    total_gross_margin numeric(18, 8) NOT NULL DEFAULT 0,
    created_at         timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (user_id, summary_date)
);
