-- Contract v1.3: the cost a gateway computed for a request itself (LiteLLM's
-- `response_cost`, a float), kept next to our exact price to compare the two; never billed
-- from. NULL when the gateway sent none. The model summary adds it up over the requests
-- that carry one, with our vendor cost of the same requests (`report daily --by model`).
ALTER TABLE token_usage_ledger
    ADD COLUMN gateway_cost_usd numeric(18, 10);

ALTER TABLE model_usage_daily_summary
    ADD COLUMN gateway_costed_requests    bigint         NOT NULL DEFAULT 0,
    ADD COLUMN total_gateway_cost_usd     numeric(20, 10) NOT NULL DEFAULT 0,
    ADD COLUMN gateway_costed_vendor_cost numeric(18, 8) NOT NULL DEFAULT 0;
