ALTER TABLE token_usage_ledger
    DROP COLUMN price_breakdown;

DROP TABLE model_price_components;
