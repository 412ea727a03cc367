REVOKE ALL ON
    users, user_credit_balance, user_credit_source,
    token_usage_daily_summary, credit_usage_daily_summary
FROM api_reader;
DROP TABLE api_keys;
REVOKE USAGE ON SCHEMA public FROM api_reader;

-- Cluster-wide, as in 009: dropped only if no other database still grants it anything,
-- and only if this owner may (a non-superuser owner may not drop a role another role made).
DO $$
BEGIN
    DROP ROLE IF EXISTS api_reader;
EXCEPTION
    WHEN dependent_objects_still_exist OR insufficient_privilege THEN NULL;
END $$;
