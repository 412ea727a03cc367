ALTER TABLE model_usage_daily_summary
    DROP COLUMN gateway_costed_vendor_cost,
    DROP COLUMN total_gateway_cost_usd,
    DROP COLUMN gateway_costed_requests;

ALTER TABLE token_usage_ledger
    DROP COLUMN gateway_cost_usd;
