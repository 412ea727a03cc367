-- Plan 111: coupons, their limits and validation rules, and redemptions.
-- Coupons are soft-deleted (deleted_at); a hard delete still keeps the redemption history
-- because coupon_redemption.coupon_id is SET NULL (seed Task 2.2). Deleting a user removes
-- the user's redemptions (seed Test 6, GDPR).

CREATE TABLE coupon (
    id             uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    code           varchar(50)    NOT NULL UNIQUE,
    coupon_type    varchar(50)    NOT NULL,
    discount_value numeric(10, 2) NOT NULL,
    discount_type  varchar(20)    NOT NULL,
    description    text,
    valid_from     timestamptz    NOT NULL,
    valid_until    timestamptz,
    is_active      boolean        NOT NULL DEFAULT true,
    -- RESTRICT: an admin who authored coupons is reassigned before being deleted.
    created_by     uuid           NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    deleted_at     timestamptz,
    deleted_by     uuid           REFERENCES users (id) ON DELETE SET NULL,
    created_at     timestamptz    NOT NULL DEFAULT now(),
    updated_at     timestamptz    NOT NULL DEFAULT now()
);

CREATE INDEX coupon_is_active_deleted_at_idx ON coupon (is_active, deleted_at);

-- One row of limits and counters per coupon.
CREATE TABLE coupon_usage_limit (
    id                         uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    coupon_id                  uuid           NOT NULL UNIQUE
        REFERENCES coupon (id) ON DELETE CASCADE,
    max_total_uses             integer,
    max_uses_per_user          integer        NOT NULL DEFAULT 1,
    total_uses                 integer        NOT NULL DEFAULT 0,
    unique_users               integer        NOT NULL DEFAULT 0,
    total_discount_applied_usd numeric(12, 2) NOT NULL DEFAULT 0,
    created_at                 timestamptz    NOT NULL DEFAULT now(),
    updated_at                 timestamptz    NOT NULL DEFAULT now()
);

CREATE TABLE coupon_validation_rule (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    coupon_id  uuid        NOT NULL REFERENCES coupon (id) ON DELETE CASCADE,
    rule_type  varchar(50) NOT NULL,
    rule_value jsonb       NOT NULL,
    is_active  boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX coupon_validation_rule_coupon_id_is_active_idx
    ON coupon_validation_rule (coupon_id, is_active);

CREATE TABLE coupon_redemption (
    id                   uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    coupon_id            uuid           REFERENCES coupon (id) ON DELETE SET NULL,
    user_id              uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id      uuid           REFERENCES subscription_monetization (id) ON DELETE SET NULL,
    redemption_date      timestamptz    NOT NULL DEFAULT now(),
    discount_applied_usd numeric(10, 2) NOT NULL,
    original_amount_usd  numeric(10, 2) NOT NULL,
    final_amount_usd     numeric(10, 2) NOT NULL,
    redemption_status    varchar(20)    NOT NULL DEFAULT 'success',
    failure_reason       text,
    created_at           timestamptz    NOT NULL DEFAULT now()
);

-- Seed Task 2.1.
CREATE INDEX idx_coupon_redemption_user_status_date
    ON coupon_redemption (user_id, redemption_status, redemption_date);
CREATE INDEX coupon_redemption_coupon_id_idx ON coupon_redemption (coupon_id);
CREATE INDEX coupon_redemption_subscription_id_idx ON coupon_redemption (subscription_id);
