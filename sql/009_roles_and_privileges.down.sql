REVOKE ALL ON
    token_usage_ledger, credit_deduction_ledger,
    token_usage_daily_summary, credit_usage_daily_summary,
    providers, model_provider_pricing, pricing_configs
FROM finance_reader;

REVOKE ALL ON
    users, subscription_monetization, perpetual_license,
    providers, model_provider_pricing, pricing_configs,
    token_usage_ledger, credit_deduction_ledger,
    user_credit_balance, user_credit_source, credit_allocation,
    token_usage_daily_summary, credit_usage_daily_summary
FROM pipeline_writer;

REVOKE USAGE ON SCHEMA public FROM pipeline_writer, finance_reader;

-- The roles are cluster-wide: drop each only if no other database still grants it
-- anything (then DROP ROLE fails with dependent_objects_still_exist and the role stays),
-- and only if this owner may: a role another role created needs ADMIN OPTION on it to
-- drop (PostgreSQL 16+; a non-superuser owner has that only on roles it created), else
-- it stays for its creator (insufficient_privilege).
DO $$
BEGIN
    DROP ROLE IF EXISTS pipeline_writer;
EXCEPTION
    WHEN dependent_objects_still_exist OR insufficient_privilege THEN NULL;
END $$;

DO $$
BEGIN
    DROP ROLE IF EXISTS finance_reader;
EXCEPTION
    WHEN dependent_objects_still_exist OR insufficient_privilege THEN NULL;
END $$;
