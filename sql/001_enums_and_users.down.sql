DROP TABLE users;
DROP TYPE subscription_status;
DROP TYPE subscription_tier;
