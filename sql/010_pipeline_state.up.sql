-- What the usage pipeline keeps beside the seed's tables:
--  * credit_alert_outbox: low/exhausted balance alerts, written with the deduction that
--    raised them and published afterwards, so a crash between commit and publish loses none;
--  * exact sums behind the summaries' derived columns (avg latency, success rate), so a
--    rollup increment never averages an average;
--  * model_usage_daily_summary: per day, provider and model, for margin analysis;
--  * credit_deduction_ledger.seq: the order of a user's balance changes. Rows of one batch
--    share created_at, and the balance chain must be checkable row by row; changes of one
--    user are serialized by the balance-row lock, so seq follows their commit order.

CREATE TABLE credit_alert_outbox (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         varchar(20) NOT NULL,
    balance      integer     NOT NULL,
    low_water    integer     NOT NULL,
    request_id   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX credit_alert_outbox_unpublished_idx
    ON credit_alert_outbox (created_at) WHERE published_at IS NULL;
CREATE INDEX credit_alert_outbox_user_id_idx ON credit_alert_outbox (user_id);

ALTER TABLE credit_deduction_ledger ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX credit_deduction_ledger_user_id_seq_idx ON credit_deduction_ledger (user_id, seq);

ALTER TABLE token_usage_daily_summary
    ADD COLUMN total_processing_time_ms bigint  NOT NULL DEFAULT 0,
    ADD COLUMN successful_requests      integer NOT NULL DEFAULT 0;

CREATE TABLE model_usage_daily_summary (
    summary_date              date           NOT NULL,
    provider_id               uuid           NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    model_id                  varchar(255)   NOT NULL,
    total_requests            bigint         NOT NULL DEFAULT 0,
    total_input_tokens        bigint         NOT NULL DEFAULT 0,
    total_output_tokens       bigint         NOT NULL DEFAULT 0,
    total_cached_input_tokens bigint         NOT NULL DEFAULT 0,
    total_cache_write_tokens  bigint         NOT NULL DEFAULT 0,
    total_vendor_cost         numeric(18, 8) NOT NULL DEFAULT 0,
    total_credits_deducted    bigint         NOT NULL DEFAULT 0,
    total_credit_value_usd    numeric(18, 8) NOT NULL DEFAULT 0,
    total_gross_margin        numeric(18, 8)
        GENERATED ALWAYS AS (total_credit_value_usd - total_vendor_cost) STORED,
    updated_at                timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (summary_date, provider_id, model_id)
);

GRANT SELECT, INSERT, UPDATE ON credit_alert_outbox, model_usage_daily_summary TO pipeline_writer;
GRANT SELECT ON model_usage_daily_summary TO finance_reader;
