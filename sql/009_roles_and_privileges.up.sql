-- Group roles and their privileges. Login users are made members of these roles
-- (GRANT pipeline_writer TO worker_login); the roles themselves cannot log in.
--
--   pipeline_writer  what the worker needs, nothing more. The ledgers are append-only:
--                    INSERT but no UPDATE or DELETE, except the reversal columns of
--                    credit_deduction_ledger. Deleting a user as the owner still cascades.
--   finance_reader   reads the books: ledgers, daily summaries and pricing tables.
--
-- Roles are cluster-wide while migrations run per database (and the tests create many
-- databases in one cluster), so a role is created only if it does not exist yet.
-- A later migration that adds tables grants on them in its own file, the same way, and
-- revokes in its down file.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipeline_writer') THEN
        CREATE ROLE pipeline_writer NOLOGIN;
    END IF;
EXCEPTION
    -- Another database's migration created it between the check and the CREATE.
    WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'finance_reader') THEN
        CREATE ROLE finance_reader NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA public TO pipeline_writer, finance_reader;

-- pipeline_writer: reference data, read only.
GRANT SELECT ON
    users, subscription_monetization, perpetual_license,
    providers, model_provider_pricing, pricing_configs
TO pipeline_writer;

-- pipeline_writer: the immutable ledgers.
GRANT SELECT, INSERT ON token_usage_ledger, credit_deduction_ledger TO pipeline_writer;
GRANT UPDATE (status, reversed_at, reversed_by, reversal_reason)
    ON credit_deduction_ledger TO pipeline_writer;

-- pipeline_writer: balances, credit sources, grants and rollups change in place.
GRANT SELECT, INSERT, UPDATE ON
    user_credit_balance, user_credit_source, credit_allocation,
    token_usage_daily_summary, credit_usage_daily_summary
TO pipeline_writer;

-- finance_reader: the books and the prices behind them.
GRANT SELECT ON
    token_usage_ledger, credit_deduction_ledger,
    token_usage_daily_summary, credit_usage_daily_summary,
    providers, model_provider_pricing, pricing_configs
TO finance_reader;
