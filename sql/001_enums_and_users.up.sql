-- Subscription enums (seed Task 1.2) and the users table every other table hangs off.
-- The database itself rejects a tier or status outside these lists.

CREATE TYPE subscription_tier AS ENUM (
    'free', 'pro', 'pro_max', 'enterprise_pro', 'enterprise_max', 'perpetual'
);

CREATE TYPE subscription_status AS ENUM (
    'trial', 'active', 'past_due', 'cancelled', 'expired', 'suspended'
);

CREATE TABLE users (
    id          uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    email       varchar(255) NOT NULL UNIQUE,
    role        varchar(20)  NOT NULL DEFAULT 'user',
    created_at  timestamptz  NOT NULL DEFAULT now(),
    updated_at  timestamptz  NOT NULL DEFAULT now()
);
