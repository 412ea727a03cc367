DROP TABLE token_usage_ledger;
DROP TABLE credit_deduction_ledger;
