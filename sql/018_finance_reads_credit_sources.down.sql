REVOKE SELECT ON user_credit_source FROM finance_reader;
