DROP TABLE credit_usage_daily_summary;
DROP TABLE token_usage_daily_summary;
