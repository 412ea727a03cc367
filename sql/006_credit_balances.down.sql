DROP TABLE user_credit_source;
DROP TABLE user_credit_balance;
