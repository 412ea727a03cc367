-- Plan 109: subscriptions, their credit allocations, invoices and proration events.
-- Every user_id cascades so that deleting a user (GDPR) removes all of that user's rows.

CREATE TABLE subscription_monetization (
    id                        uuid                PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                   uuid                NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tier                      subscription_tier   NOT NULL,
    billing_cycle             varchar(20)         NOT NULL,
    status                    subscription_status NOT NULL,
    base_price_usd            numeric(10, 2)      NOT NULL,
    monthly_credit_allocation integer             NOT NULL,
    current_period_start      timestamptz         NOT NULL,
    current_period_end        timestamptz         NOT NULL,
    trial_end                 timestamptz,
    cancelled_at              timestamptz,
    created_at                timestamptz         NOT NULL DEFAULT now(),
    updated_at                timestamptz         NOT NULL DEFAULT now()
);

-- Seed Task 2.1.
CREATE INDEX idx_subscription_user_period_status
    ON subscription_monetization (user_id, current_period_end, status);

CREATE TABLE credit_allocation (
    id                      uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 uuid         NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id         uuid         REFERENCES subscription_monetization (id) ON DELETE SET NULL,
    amount                  integer      NOT NULL,
    source                  varchar(50)  NOT NULL,
    allocation_period_start timestamptz  NOT NULL,
    allocation_period_end   timestamptz  NOT NULL,
    -- Seed Task 3.1: NULL expires_at means the credits never expire.
    expires_at              timestamptz,
    -- When the allocation was applied to user_credit_balance; NULL means not yet.
    applied_to_balance_at   timestamptz,
    credit_type             varchar(50)  NOT NULL DEFAULT 'subscription',
    -- Not in the seed: the grant path uses it so that a retried grant is applied once.
    idempotency_key         varchar(255) UNIQUE,
    created_at              timestamptz  NOT NULL DEFAULT now()
);

CREATE INDEX credit_allocation_user_id_idx ON credit_allocation (user_id);
CREATE INDEX credit_allocation_subscription_id_idx ON credit_allocation (subscription_id);

CREATE TABLE billing_invoice (
    id              uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id uuid           REFERENCES subscription_monetization (id) ON DELETE SET NULL,
    amount_due_usd  numeric(10, 2) NOT NULL,
    amount_paid_usd numeric(10, 2) NOT NULL DEFAULT 0,
    currency        varchar(3)     NOT NULL DEFAULT 'usd',
    status          varchar(20)    NOT NULL,
    period_start    timestamptz    NOT NULL,
    period_end      timestamptz    NOT NULL,
    paid_at         timestamptz,
    created_at      timestamptz    NOT NULL DEFAULT now(),
    updated_at      timestamptz    NOT NULL DEFAULT now()
);

-- Seed Task 2.1.
CREATE INDEX idx_billing_invoice_user_status_period_end
    ON billing_invoice (user_id, status, period_end);
CREATE INDEX billing_invoice_subscription_id_idx ON billing_invoice (subscription_id);

CREATE TABLE proration_event (
    id                         uuid              PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                    uuid              NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id            uuid              NOT NULL
        REFERENCES subscription_monetization (id) ON DELETE CASCADE,
    from_tier                  subscription_tier NOT NULL,
    to_tier                    subscription_tier NOT NULL,
    change_type                varchar(20)       NOT NULL,
    days_remaining             integer           NOT NULL,
    days_in_cycle              integer           NOT NULL,
    unused_credit_value_usd    numeric(10, 2)    NOT NULL,
    new_tier_prorated_cost_usd numeric(10, 2)    NOT NULL,
    net_charge_usd             numeric(10, 2)    NOT NULL,
    effective_date             timestamptz       NOT NULL,
    status                     varchar(20)       NOT NULL DEFAULT 'pending',
    created_at                 timestamptz       NOT NULL DEFAULT now(),
    updated_at                 timestamptz       NOT NULL DEFAULT now()
);

-- Seed Task 2.1.
CREATE INDEX idx_proration_subscription_effective_status
    ON proration_event (subscription_id, effective_date, status);
CREATE INDEX proration_event_user_id_idx ON proration_event (user_id);
