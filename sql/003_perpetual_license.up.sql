-- Plan 110: perpetual licenses. An active license with byok_enabled means the user brings
-- their own API keys: usage is recorded at zero cost and no credits are deducted.

CREATE TABLE perpetual_license (
    id                      uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    license_key             varchar(255)   NOT NULL UNIQUE,
    purchase_price_usd      numeric(10, 2) NOT NULL,
    purchased_version       varchar(50)    NOT NULL,
    eligible_until_version  varchar(50)    NOT NULL,
    max_activations         integer        NOT NULL DEFAULT 3,
    current_activations     integer        NOT NULL DEFAULT 0,
    status                  varchar(20)    NOT NULL DEFAULT 'active',
    -- Seed Task 2.3: true = the user's own API keys, false = cloud credits (hybrid mode).
    byok_enabled            boolean        NOT NULL DEFAULT true,
    -- Seed Task 3.2: the coupon that granted the license, e.g. 'BYOK2025'.
    acquisition_coupon_code varchar(50),
    purchased_at            timestamptz    NOT NULL DEFAULT now(),
    created_at              timestamptz    NOT NULL DEFAULT now(),
    updated_at              timestamptz    NOT NULL DEFAULT now()
);

-- The pricing worker asks "does this user have an active license?" for every batch.
CREATE INDEX perpetual_license_user_id_status_idx ON perpetual_license (user_id, status);
CREATE INDEX perpetual_license_byok_enabled_status_idx ON perpetual_license (byok_enabled, status);
CREATE INDEX perpetual_license_acquisition_coupon_code_idx
    ON perpetual_license (acquisition_coupon_code);
