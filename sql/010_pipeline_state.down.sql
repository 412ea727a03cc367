REVOKE ALL ON credit_alert_outbox, model_usage_daily_summary
    FROM pipeline_writer, finance_reader;
DROP TABLE model_usage_daily_summary;
ALTER TABLE token_usage_daily_summary
    DROP COLUMN total_processing_time_ms,
    DROP COLUMN successful_requests;
DROP TABLE credit_alert_outbox;
ALTER TABLE credit_deduction_ledger DROP COLUMN seq;
