-- Plan 112: each user's credit balance (the single source of truth) and the sources the
-- credits came from, consumed soonest-expiring first.

CREATE TABLE user_credit_balance (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The seed also indexes user_id on its own; the UNIQUE constraint's index serves that.
    user_id               uuid        NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    amount                integer     NOT NULL DEFAULT 0,
    last_deduction_at     timestamptz,
    last_deduction_amount integer,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_credit_source (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source     varchar(50) NOT NULL,
    amount     integer     NOT NULL,
    -- NULL means the credits never expire.
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX user_credit_source_user_id_expires_at_idx ON user_credit_source (user_id, expires_at);
CREATE INDEX user_credit_source_source_idx ON user_credit_source (source);
